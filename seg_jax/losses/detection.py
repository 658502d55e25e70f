"""Mask R-CNN losses: RPN objectness and boxes, box-head classes and boxes, mask-head BCE.

Library conventions (see ``seg_jax.losses.cross_entropy``): float32 scalars, weights as a keyword (0 for padded or
unsampled entries, default all 1), weighted means Σ(w·loss) / Σw safe at zero — so all-padding gives 0 with a zero,
finite gradient — and ``axis_name`` for exact data parallelism under ``pmap``.

Normalisations are torchvision's (``rpn.py``, ``roi_heads.py``): objectness and class CE are means over the sampled
entries; both box losses sum smooth-L1 over the four deltas of the positives and divide by the number of SAMPLED
entries (positives and negatives); the mask loss is the mean BCE over the foreground RoIs' pixels. Detectron2 differs
only in the default ``beta`` (0, i.e. L1, where torchvision uses 1/9) and its RPN normaliser (images × 256, which
equals the sampled count whenever enough negatives exist).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from seg_jax.losses.common import global_normalizer
from seg_jax.losses.cross_entropy import softmax_cross_entropy

Array = jax.Array


def _weights(weights: Array | None, shape: tuple[int, ...]) -> Array:
    w = jnp.ones(shape, jnp.float32) if weights is None else weights.astype(jnp.float32)
    return jax.lax.stop_gradient(w)


def smooth_l1(x: Array, *, beta: float) -> Array:
    """Elementwise smooth-L1 of a residual (torchvision's): 0.5·x²/β where |x| < β, else |x| − 0.5β; β = 0 is L1."""
    if beta < 1e-5:  # as fvcore: the quadratic piece vanishes and would divide by ~0
        return jnp.abs(x)
    return optax.huber_loss(x, delta=beta) / beta


def rpn_objectness_loss(logits: Array, targets: Array, *, weights: Array | None = None,
                        axis_name: str | None = None) -> Array:
    """Sigmoid BCE of anchor objectness, weighted mean over the sampled anchors.

    Args:
      logits: ``[..., A]`` float objectness logits.
      targets: ``[..., A]`` float in {0, 1} (``rpn_targets(...)["objectness"]``).
      weights: ``[..., A]`` float, 1 for sampled anchors (``rpn_targets(...)["weights"]``).
    Returns:
      float32 scalar.
    """
    w = _weights(weights, logits.shape)
    bce = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), targets.astype(jnp.float32))
    return jnp.sum(w * bce) / global_normalizer(jnp.sum(w), axis_name=axis_name)


def rpn_box_loss(pred_deltas: Array, target_deltas: Array, labels: Array, *, weights: Array | None = None,
                 beta: float = 1.0 / 9, axis_name: str | None = None) -> Array:
    """Smooth-L1 (β; L1 when β = 0) of the positive anchors' deltas, divided by the weight of all sampled anchors.

    Args:
      pred_deltas, target_deltas: ``[..., A, 4]`` float.
      labels: ``[..., A]``, > 0 for positive anchors (``rpn_targets(...)["objectness"]``).
      weights: ``[..., A]`` float, 1 for sampled anchors.
    Returns:
      float32 scalar.
    """
    w = _weights(weights, labels.shape)
    per_anchor = jnp.sum(smooth_l1(pred_deltas.astype(jnp.float32) - target_deltas, beta=beta), axis=-1)
    return jnp.sum(jnp.where(labels > 0, w * per_anchor, 0.0)) / global_normalizer(jnp.sum(w), axis_name=axis_name)


def class_loss(logits: Array, classes: Array, *, weights: Array | None = None,
               axis_name: str | None = None) -> Array:
    """Softmax cross-entropy of RoI classes (0 background), weighted mean over the sampled RoIs.

    Args:
      logits: ``[..., R, C]`` float; classes: ``[..., R]`` int in [0, C); weights: ``[..., R]`` float.
    Returns:
      float32 scalar.
    """
    return softmax_cross_entropy(logits, classes, weights=weights, ignore_index=-1, axis_name=axis_name)


def box_regression_loss(pred_deltas: Array, target_deltas: Array, classes: Array, *, weights: Array | None = None,
                        beta: float = 1.0 / 9, axis_name: str | None = None) -> Array:
    """Smooth-L1 of each foreground RoI's deltas for its TRUE class only, over the weight of all sampled RoIs.

    Args:
      pred_deltas: ``[..., R, C, 4]`` float, per-class deltas (reshape a ``[R, 4C]`` head output).
      target_deltas: ``[..., R, 4]`` float (``sample_rois(...)["box_targets"]``).
      classes: ``[..., R]`` int, 0 background (contributes only to the denominator).
      weights: ``[..., R]`` float, 1 for sampled RoIs.
    Returns:
      float32 scalar; the other classes' deltas get zero gradient.
    """
    w = _weights(weights, classes.shape)
    index = classes.astype(jnp.int32)[..., None, None]
    chosen = jnp.take_along_axis(pred_deltas, jnp.broadcast_to(index, (*classes.shape, 1, 4)), axis=-2)[..., 0, :]
    per_roi = jnp.sum(smooth_l1(chosen.astype(jnp.float32) - target_deltas, beta=beta), axis=-1)
    return jnp.sum(jnp.where(classes > 0, w * per_roi, 0.0)) / global_normalizer(jnp.sum(w), axis_name=axis_name)


def mask_loss(mask_logits: Array, targets: Array, classes: Array, *, weights: Array | None = None,
              axis_name: str | None = None) -> Array:
    """Per-pixel sigmoid BCE on each foreground RoI's TRUE-class channel, mean over those RoIs' pixels.

    Args:
      mask_logits: ``[..., R, M, M, C]`` float.
      targets: ``[..., R, M, M]`` float in [0, 1] (``mask_targets``).
      classes: ``[..., R]`` int, 0 background (background RoIs contribute nothing).
      weights: ``[..., R]`` float, 1 for sampled RoIs.
    Returns:
      float32 scalar; the other channels get zero gradient.
    """
    w = jnp.where(classes > 0, _weights(weights, classes.shape), 0.0)
    index = jnp.broadcast_to(classes.astype(jnp.int32)[..., None, None, None], (*targets.shape, 1))
    chosen = jnp.take_along_axis(mask_logits, index, axis=-1)[..., 0].astype(jnp.float32)
    per_roi = jnp.mean(optax.sigmoid_binary_cross_entropy(chosen, targets.astype(jnp.float32)), axis=(-2, -1))
    return jnp.sum(w * per_roi) / global_normalizer(jnp.sum(w), axis_name=axis_name)
