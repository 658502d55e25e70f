"""Mask R-CNN losses: hand-worked values, true-class-only gradients, padding, batching and pmap."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seg_jax.losses import detection

rpn_objectness_loss = jax.jit(detection.rpn_objectness_loss)
rpn_box_loss = jax.jit(detection.rpn_box_loss, static_argnames="beta")
class_loss = jax.jit(detection.class_loss)
box_regression_loss = jax.jit(detection.box_regression_loss, static_argnames="beta")
mask_loss = jax.jit(detection.mask_loss)


def test_smooth_l1_values():
    x = jnp.array([0.05, -0.3, 0.0])
    # β = 0.1: 0.5 · 0.05² / 0.1 inside, 0.3 − 0.05 outside; β = 0 is |x|.
    np.testing.assert_allclose(detection.smooth_l1(x, beta=0.1), [0.0125, 0.25, 0.0], rtol=1e-6)
    np.testing.assert_allclose(detection.smooth_l1(x, beta=0.0), [0.05, 0.3, 0.0], rtol=1e-6)


def test_rpn_objectness_loss_hand_value():
    logits = jnp.array([0.0, 2.0, -1.0])
    targets = jnp.array([1.0, 0.0, 1.0])
    # BCE(0, 1) = log 2, BCE(2, 0) = log(1 + e²); the third anchor is unsampled. Mean over 2 sampled anchors.
    got = rpn_objectness_loss(logits, targets, weights=jnp.array([1.0, 1.0, 0.0]))
    np.testing.assert_allclose(got, (math.log(2) + math.log(1 + math.e ** 2)) / 2, rtol=1e-6)


def test_rpn_box_loss_hand_value():
    pred = jnp.array([[0.05, -0.5, 0.0, 1.0], [9.0, 9.0, 9.0, 9.0], [3.0, 0.0, 0.0, 0.0], [7.0, 7.0, 7.0, 7.0]])
    target = jnp.zeros((4, 4))
    labels = jnp.array([1.0, 0.0, 1.0, 0.0])
    weights = jnp.array([1.0, 1.0, 0.0, 1.0])
    # Only anchor 0 is a sampled positive: with β = 0.1, 0.0125 + 0.45 + 0 + 0.95, over 3 sampled anchors.
    np.testing.assert_allclose(rpn_box_loss(pred, target, labels, weights=weights, beta=0.1), 1.4125 / 3, rtol=1e-6)
    np.testing.assert_allclose(rpn_box_loss(pred, target, labels, weights=weights, beta=0.0), 1.55 / 3, rtol=1e-6)


def test_class_loss_hand_value():
    logits = jnp.array([[0.0, 0.0, 0.0], [math.log(4.0), 0.0, 0.0], [5.0, -5.0, 0.0]])
    classes = jnp.array([1, 0, 2])
    # −log(1/3) and −log(4/6); the third RoI is padding.
    got = class_loss(logits, classes, weights=jnp.array([1.0, 1.0, 0.0]))
    np.testing.assert_allclose(got, (math.log(3) + math.log(1.5)) / 2, rtol=1e-6)


def test_box_regression_loss_uses_the_true_class_only():
    rng = np.random.default_rng(0)
    pred = jnp.asarray(rng.normal(size=(3, 3, 4)).astype(np.float32))
    target = jnp.asarray(rng.normal(size=(3, 4)).astype(np.float32))
    classes = jnp.array([2, 0, 1])
    weights = jnp.array([1.0, 1.0, 0.0])
    # RoI 0 (class 2) is the only sampled foreground RoI; RoI 1 is background, counted in the denominator only.
    residual = np.asarray(pred[0, 2] - target[0])
    np.testing.assert_allclose(box_regression_loss(pred, target, classes, weights=weights, beta=0.0),
                               np.abs(residual).sum() / 2, rtol=1e-5)
    grad = jax.grad(lambda p: box_regression_loss(p, target, classes, weights=weights, beta=0.0))(pred)
    expected = np.zeros((3, 3, 4))
    expected[0, 2] = np.sign(residual) / 2
    np.testing.assert_allclose(grad, expected, rtol=1e-6)


def test_mask_loss_hand_value_and_gradient_only_in_true_class_channel():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 2, 2, 4)).astype(np.float32)
    logits[0, :, :, 2] = 0.0  # BCE(0, t) = log 2 for any target t
    targets = jnp.asarray(rng.uniform(size=(3, 2, 2)).astype(np.float32))
    classes = jnp.array([2, 0, 3])
    weights = jnp.array([1.0, 1.0, 0.0])  # RoI 1 is background, RoI 2 unsampled: only RoI 0 counts
    np.testing.assert_allclose(mask_loss(jnp.asarray(logits), targets, classes, weights=weights), math.log(2),
                               rtol=1e-6)
    weights = jnp.array([1.0, 1.0, 1.0])
    grad = np.asarray(jax.grad(lambda m: mask_loss(m, targets, classes, weights=weights))(jnp.asarray(logits)))
    # d BCE / d logit = (σ(x) − t) / (pixels of the 2 foreground RoIs) on the true channel, 0 elsewhere.
    expected = np.zeros_like(logits)
    for r, c in [(0, 2), (2, 3)]:
        expected[r, :, :, c] = (1 / (1 + np.exp(-logits[r, :, :, c])) - np.asarray(targets[r])) / 8
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)


def test_all_padding_gives_zero_with_finite_zero_gradient():
    rng = np.random.default_rng(2)
    logits = jnp.asarray(rng.normal(size=(4, 3)).astype(np.float32))
    deltas = jnp.asarray(rng.normal(size=(4, 3, 4)).astype(np.float32))
    masks = jnp.asarray(rng.normal(size=(4, 2, 2, 3)).astype(np.float32))
    zeros, classes = jnp.zeros(4), jnp.array([1, 2, 0, 1])
    losses = {
        "objectness": lambda p: rpn_objectness_loss(p[0][:, 0], jnp.ones(4), weights=zeros),
        "rpn_box": lambda p: rpn_box_loss(p[1][:, 0], jnp.zeros((4, 4)), jnp.ones(4), weights=zeros),
        "class": lambda p: class_loss(p[0], classes, weights=zeros),
        "box": lambda p: box_regression_loss(p[1], jnp.zeros((4, 4)), classes, weights=zeros),
        "mask": lambda p: mask_loss(p[2], jnp.zeros((4, 2, 2)), classes, weights=zeros),
    }
    for name, fn in losses.items():
        value, grads = jax.jit(jax.value_and_grad(fn))((logits, deltas, masks))
        assert value == 0.0, name
        for g in grads:
            assert np.all(np.asarray(g) == 0.0), name


def test_batched_losses_normalise_over_the_whole_batch_and_match_under_pmap():
    rng = np.random.default_rng(3)
    pred = jnp.asarray(rng.normal(size=(2, 5, 3, 4)).astype(np.float32))
    target = jnp.asarray(rng.normal(size=(2, 5, 4)).astype(np.float32))
    classes = jnp.asarray(rng.integers(0, 3, (2, 5)))
    weights = jnp.asarray((rng.uniform(size=(2, 5)) > 0.3).astype(np.float32))
    batched = box_regression_loss(pred, target, classes, weights=weights)
    flat = box_regression_loss(pred.reshape(10, 3, 4), target.reshape(10, 4), classes.reshape(10),
                               weights=weights.reshape(10))
    np.testing.assert_allclose(batched, flat, rtol=1e-6)
    pmapped = jax.pmap(lambda p, t, c, w: detection.box_regression_loss(p, t, c, weights=w, axis_name="batch"),
                       axis_name="batch")(pred[None], target[None], classes[None], weights[None])
    np.testing.assert_allclose(pmapped[0], batched, rtol=1e-6)


@pytest.mark.parametrize("beta", [0.0, 1.0 / 9])
def test_rpn_box_loss_gradient_is_finite_at_zero_residual(beta):
    grad = jax.grad(lambda p: rpn_box_loss(p, jnp.zeros((2, 4)), jnp.ones(2), weights=jnp.ones(2), beta=beta))(
        jnp.zeros((2, 4)))
    assert np.all(np.isfinite(grad))
