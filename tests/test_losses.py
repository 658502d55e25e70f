"""Losses against NumPy written here and hand-worked cases."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seg_jax import losses

N = 4


def _random_case(seed, *, b=2, h=5, w=6, ignore_frac=0.2):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(b, h, w, N)).astype(np.float32) * 3
    labels = rng.integers(0, N, size=(b, h, w))
    labels[rng.random((b, h, w)) < ignore_frac] = 255
    return logits, labels, rng


def _np_ce(logits, labels, weights=None, class_weights=None, ignore=255):
    num = den = 0.0
    for idx in np.ndindex(labels.shape):
        y = labels[idx]
        if y == ignore:
            continue
        z = logits[idx].astype(np.float64)
        nll = np.log(np.exp(z - z.max()).sum()) + z.max() - z[y]
        w = (1.0 if weights is None else weights[idx]) * (1.0 if class_weights is None else class_weights[y])
        num += w * nll
        den += w
    return num / den


@pytest.mark.parametrize("use_weights,use_class_weights", [(False, False), (True, False), (False, True), (True, True)])
def test_cross_entropy_matches_numpy(use_weights, use_class_weights):
    logits, labels, rng = _random_case(0)
    weights = rng.uniform(0.1, 5.0, size=labels.shape).astype(np.float32) if use_weights else None
    cw = np.array([0.2, 1.0, 3.0, 7.0], np.float32) if use_class_weights else None
    got = losses.softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), weights=weights, class_weights=cw)
    np.testing.assert_allclose(float(got), _np_ce(logits, labels, weights, cw), rtol=1e-5)


def test_class_weighted_ce_is_normalised_by_weight_sum_not_count():
    # Two pixels, one of class 0 (weight 1) and one of class 1 (weight 3), uniform logits:
    # ce = log 2 for both; torch's weighted mean = (1·log2 + 3·log2) / (1 + 3) = log 2.
    logits = jnp.zeros((1, 1, 2, 2))
    labels = jnp.array([[[0, 1]]])
    got = losses.softmax_cross_entropy(logits, labels, class_weights=jnp.array([1.0, 3.0]))
    np.testing.assert_allclose(float(got), np.log(2.0), rtol=1e-6)


def _np_dice(logits, labels, eps=1e-6, ignore=255):
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    vals = []
    for b in range(labels.shape[0]):
        keep = labels[b] != ignore
        for c in range(N):
            pc = p[b, ..., c][keep]
            gc = (labels[b][keep] == c).astype(np.float64)
            vals.append((2 * (pc * gc).sum() + eps) / ((pc + gc).sum() + eps))
    return 1 - np.mean(vals)


def test_dice_matches_numpy():
    logits, labels, _ = _random_case(1)
    got = losses.dice_loss(jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(float(got), _np_dice(logits, labels), rtol=1e-5)


def test_dice_hand_worked():
    # One image, 2 classes, 2 pixels, confident and correct → dice ≈ 1 for both classes.
    big = 30.0
    logits = jnp.array([[[[big, 0.0], [0.0, big]]]])
    labels = jnp.array([[[0, 1]]])
    assert float(losses.dice_loss(logits, labels)) == pytest.approx(0.0, abs=1e-6)
    # Uniform prediction: p = 0.5 everywhere. Class 0: num = 2·0.5 = 1, den = (0.5+0.5) + 1 = 2 → 0.5.
    # Same for class 1, so loss = 1 − 0.5 = 0.5.
    assert float(losses.dice_loss(jnp.zeros((1, 1, 2, 2)), labels)) == pytest.approx(0.5, abs=1e-6)
    # An ignored pixel is excluded from both sums: with the second pixel ignored, class 0 has
    # num = 1, den = 1.5 → 2/3; class 1 is absent: num = 0, den = 0.5 → ≈ 0. Loss = 1 − (2/3)/2.
    got = losses.dice_loss(jnp.zeros((1, 1, 2, 2)), jnp.array([[[0, 255]]]))
    assert float(got) == pytest.approx(1 - (2 / 3) / 2, abs=1e-5)


@pytest.mark.parametrize("name", ["cross_entropy", "dice"])
def test_all_ignored_gives_zero_loss_and_zero_gradient(name):
    fn = losses.LOSSES.get(name)
    logits = jnp.asarray(np.random.default_rng(2).normal(size=(2, 3, 3, N)), jnp.float32)
    labels = jnp.full((2, 3, 3), 255)
    value, grad = jax.value_and_grad(lambda x: fn(x, labels))(logits)
    assert float(value) == 0.0
    assert np.all(np.asarray(grad) == 0.0)


def test_combination_is_weighted_sum_and_unknown_name_lists_valid():
    logits, labels, _ = _random_case(3)
    fn = losses.make_loss_fn({"cross_entropy": 0.5, "dice": 2.0})
    total, terms = fn(jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(float(total), 0.5 * _np_ce(logits, labels) + 2.0 * _np_dice(logits, labels), rtol=1e-5)
    assert set(terms) == {"cross_entropy", "dice"}
    with pytest.raises(KeyError, match="unknown loss .focal.; valid names: cross_entropy, dice"):
        losses.make_loss_fn({"focal": 1.0})


def test_loss_options_come_from_the_config():
    logits, labels, _ = _random_case(3)
    fn = losses.make_loss_fn({"cross_entropy": {"weight": 0.5}, "dice": {"weight": 2.0, "eps": 0.25}})
    total, terms = fn(jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(float(terms["dice"]), _np_dice(logits, labels, eps=0.25), rtol=1e-5)
    np.testing.assert_allclose(float(total), 0.5 * _np_ce(logits, labels) + 2.0 * _np_dice(logits, labels, eps=0.25),
                               rtol=1e-5)
    assert losses.loss_options(losses.dice_loss) == {"eps": 1e-6}
    assert losses.loss_options(losses.softmax_cross_entropy) == {}
    with pytest.raises(ValueError, match="loss 'dice' has no option.* smooth; its options: weight, eps"):
        losses.make_loss_fn({"dice": {"smooth": 1.0}})
    with pytest.raises(ValueError, match="loss 'cross_entropy': weight must be a number"):
        losses.make_loss_fn({"cross_entropy": {"weight": "one"}})


def test_axis_name_makes_pmean_equal_the_global_loss():
    # The psum/pmean path of `axis_name` on one device must give the plain weighted mean; exactness
    # across devices with different weight sums is shown end to end by tests/test_parallel.py.
    logits, labels, rng = _random_case(4, b=2)
    labels[0, :4] = 255
    weights = rng.uniform(0.1, 5.0, size=labels.shape).astype(np.float32)
    step = jax.pmap(
        lambda l, y, w: jax.lax.pmean(losses.softmax_cross_entropy(l, y, weights=w, axis_name="b"), "b"),
        axis_name="b", devices=jax.devices()[:1])
    got = step(logits[None], labels[None], weights[None])[0]
    np.testing.assert_allclose(float(got), _np_ce(logits, labels, weights), rtol=1e-5)


def _np_distance(distance, target, weights=None, penalty="l1"):
    """Mean error over foreground pixels (target > 0), each weighted, written as a loop."""
    num = den = 0.0
    for idx in np.ndindex(target.shape):
        if target[idx] <= 0:
            continue
        w = 1.0 if weights is None else float(weights[idx])
        e = float(distance[idx]) - float(target[idx])
        num += w * (abs(e) if penalty == "l1" else e * e)
        den += w
    return num / den


@pytest.mark.parametrize("penalty,use_weights", [("l1", False), ("l2", False), ("l1", True), ("l2", True)])
def test_distance_loss_matches_numpy_on_foreground_pixels(penalty, use_weights):
    rng = np.random.default_rng(5)
    target = np.where(rng.random((2, 5, 6)) < 0.4, 0.0, rng.uniform(0.05, 1.0, (2, 5, 6))).astype(np.float32)
    distance = rng.normal(0.5, 0.6, target.shape).astype(np.float32)
    weights = (rng.random(target.shape) < 0.7).astype(np.float32) * 2.0 if use_weights else None
    got = losses.distance_loss(jnp.asarray(distance), jnp.asarray(target), weights=weights, penalty=penalty)
    np.testing.assert_allclose(float(got), _np_distance(distance, target, weights, penalty), rtol=1e-5)
    # Background predictions are free: changing them changes nothing.
    moved = np.where(target > 0, distance, 100.0)
    np.testing.assert_allclose(float(losses.distance_loss(jnp.asarray(moved), jnp.asarray(target), weights=weights,
                                                          penalty=penalty)), float(got), rtol=1e-6)


def test_distance_term_reads_the_distance_channel_and_skips_ignored_pixels():
    logits, labels, rng = _random_case(6)
    target = np.where(rng.random(labels.shape) < 0.5, 0.0, rng.uniform(0.1, 1.0, labels.shape)).astype(np.float32)
    distance = rng.normal(0.5, 0.5, labels.shape).astype(np.float32)
    weights = rng.uniform(0.0, 3.0, labels.shape).astype(np.float32)
    weights[0, 0] = 0.0  # e.g. padding
    fn = losses.make_loss_fn({"cross_entropy": 1.0, "distance": {"weight": 0.5, "penalty": "l2"}})
    total, terms = fn(jnp.asarray(logits), jnp.asarray(labels), weights=jnp.asarray(weights),
                      distance=jnp.asarray(distance), distance_target=jnp.asarray(target))
    # the distance term counts every labelled pixel with a positive weight once: the weight map is the class terms'
    counted = ((labels != 255) & (weights > 0)).astype(np.float32)
    expected = _np_distance(distance, target, counted, "l2")
    np.testing.assert_allclose(float(terms["distance"]), expected, rtol=1e-5)
    np.testing.assert_allclose(float(total), _np_ce(logits, labels, weights) + 0.5 * expected, rtol=1e-5)
    assert losses.needs_distance({"cross_entropy": 1.0, "distance": 1.0})
    assert not losses.needs_distance({"cross_entropy": 1.0, "dice": 1.0})
    assert losses.loss_options(losses.distance_loss) == {"penalty": "l1"}
    with pytest.raises(ValueError, match="loss 'distance': penalty 'huber' is not one of l1, l2"):
        losses.make_loss_fn({"distance": {"penalty": "huber"}})
