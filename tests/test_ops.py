"""Detection ops against NumPy references written here: RoIAlign, NMS, box coding, anchors, samplers, targets."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seg_jax import ops
from seg_jax.ops import generate_anchors

# Every op runs under jit, as in training: one compilation per call signature is much faster than eager dispatch.
_POOL_OPTIONS = ("output_size", "spatial_scale", "sampling_ratio", "aligned")
roi_align = jax.jit(ops.roi_align, static_argnames=_POOL_OPTIONS)
roi_align_indexed = jax.jit(ops.roi_align_indexed, static_argnames=_POOL_OPTIONS)
multilevel_roi_align = jax.jit(ops.multilevel_roi_align, static_argnames=(
    "output_size", "sampling_ratio", "aligned", "min_level", "canonical_size", "canonical_level"))
fpn_levels = jax.jit(ops.fpn_levels, static_argnames=("min_level", "max_level", "canonical_size", "canonical_level"))
nms = jax.jit(ops.nms, static_argnames=("max_output_size", "tile_size"))
batched_nms = jax.jit(ops.batched_nms, static_argnames=("max_output_size", "tile_size"))
box_iou, clip_boxes = jax.jit(ops.box_iou), jax.jit(ops.clip_boxes)
encode_boxes = jax.jit(ops.encode_boxes, static_argnames="weights")
decode_boxes = jax.jit(ops.decode_boxes, static_argnames=("weights", "clip"))
label_anchors = jax.jit(ops.label_anchors, static_argnames=("positive_iou", "negative_iou",
                                                            "allow_low_quality_matches"))
_SAMPLE_OPTIONS = ("num_samples", "positive_fraction")
sample_balanced = jax.jit(ops.sample_balanced, static_argnames=_SAMPLE_OPTIONS)
sample_balanced_indices = jax.jit(ops.sample_balanced_indices, static_argnames=_SAMPLE_OPTIONS)
sample_rois = jax.jit(ops.sample_rois, static_argnames=_SAMPLE_OPTIONS)
mask_targets = jax.jit(ops.mask_targets, static_argnames=("mask_size", "binarize"))


# --------------------------------------------------------------------------------------------------------------------
# RoIAlign: torchvision's C++ kernel (roi_align_kernel.cpp) transcribed literally, one sample at a time.

def _bilinear_reference(f: np.ndarray, y: float, x: float) -> np.ndarray:
    height, width = f.shape[:2]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(f.shape[-1])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (hy * hx * f[y_low, x_low] + hy * lx * f[y_low, x_high]
            + ly * hx * f[y_high, x_low] + ly * lx * f[y_high, x_high])


def _roi_align_reference(features, boxes, *, out_h, out_w, scale, ratio, aligned):
    """features [B, H, W, C], boxes [B, K, 4] → [B, K, out_h, out_w, C], float64."""
    b, k = boxes.shape[:2]
    out = np.zeros((b, k, out_h, out_w, features.shape[-1]))
    offset = 0.5 if aligned else 0.0
    for n in range(b):
        for r in range(k):
            x1, y1, x2, y2 = (float(v) * scale - offset for v in boxes[n, r])
            roi_w, roi_h = x2 - x1, y2 - y1
            if not aligned:
                roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
            bin_h, bin_w = roi_h / out_h, roi_w / out_w
            for ph in range(out_h):
                for pw in range(out_w):
                    acc = np.zeros(features.shape[-1])
                    for iy in range(ratio):
                        y = y1 + ph * bin_h + (iy + 0.5) * bin_h / ratio
                        for ix in range(ratio):
                            x = x1 + pw * bin_w + (ix + 0.5) * bin_w / ratio
                            acc += _bilinear_reference(features[n], y, x)
                    out[n, r, ph, pw] = acc / (ratio * ratio)
    return out


def _random_boxes(rng, shape, *, low, high, max_size):
    xy = rng.uniform(low, high, (*shape, 2))
    wh = rng.uniform(0.2, max_size, (*shape, 2))
    return np.concatenate([xy, xy + wh], axis=-1).astype(np.float32)


@pytest.mark.parametrize("aligned, ratio, scale, output_size", [
    (True, 1, 1.0, 3), (True, 2, 0.5, (2, 3)), (True, 3, 1.0, (3, 2)),
    (False, 1, 0.5, (2, 3)), (False, 2, 1.0, 3), (False, 3, 0.5, 2)])
def test_roi_align_matches_torchvision_rule(aligned, ratio, scale, output_size):
    rng = np.random.default_rng(ratio + 10 * aligned)
    features = rng.normal(size=(2, 6, 7, 3)).astype(np.float32)
    # Boxes spill over every border (map is 7 × 6 cells; with scale 0.5 the pixel frame is twice as large), include
    # sub-cell boxes (the aligned=False minimum size matters) and one box entirely outside.
    boxes = _random_boxes(rng, (2, 6), low=-4.0 / scale, high=8.0 / scale, max_size=6.0 / scale)
    boxes[1, 0] = [30.0 / scale, 30.0 / scale, 34.0 / scale, 35.0 / scale]
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    got = roi_align(jnp.asarray(features), jnp.asarray(boxes), output_size=output_size, spatial_scale=scale,
                    sampling_ratio=ratio, aligned=aligned)
    want = _roi_align_reference(features, boxes, out_h=out_h, out_w=out_w, scale=scale, ratio=ratio, aligned=aligned)
    assert got.shape == (2, 6, out_h, out_w, 3)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)
    assert np.all(np.asarray(got)[1, 0] == 0.0)  # the box outside the map samples nothing


def test_roi_align_jit_gradient_and_errors():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(1, 4, 5, 1)).astype(np.float32)
    boxes = _random_boxes(rng, (1, 3), low=-1.5, high=4.0, max_size=3.0)
    cotangent = rng.normal(size=(1, 3, 2, 2, 1))
    pool = jax.jit(lambda f: ops.roi_align(f, jnp.asarray(boxes), output_size=2, sampling_ratio=2))
    np.testing.assert_allclose(pool(jnp.asarray(features)),
                               _roi_align_reference(features, boxes, out_h=2, out_w=2, scale=1.0, ratio=2,
                                                    aligned=True), rtol=1e-4, atol=1e-5)
    # RoIAlign is linear in the features, so d<out, g>/d features[i] = <reference(e_i), g> for each basis map e_i.
    grad = jax.grad(lambda f: jnp.sum(pool(f) * cotangent))(jnp.asarray(features))
    want = np.zeros(features.size)
    for i in range(features.size):
        basis = np.zeros(features.size)
        basis[i] = 1.0
        want[i] = np.sum(_roi_align_reference(basis.reshape(features.shape), boxes, out_h=2, out_w=2, scale=1.0,
                                              ratio=2, aligned=True) * cotangent)
    np.testing.assert_allclose(np.asarray(grad).reshape(-1), want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="sampling_ratio"):
        ops.roi_align(jnp.asarray(features), jnp.asarray(boxes), output_size=2, sampling_ratio=0)
    with pytest.raises(ValueError, match="output_size"):
        ops.roi_align(jnp.asarray(features), jnp.asarray(boxes), output_size=(2, 0))


def test_multilevel_roi_align_pools_each_box_from_its_fpn_level():
    rng = np.random.default_rng(1)
    # Levels 2, 3, 4 of a 32 × 32 image: strides 4, 8, 16. With canonical size 16 at level 4, a box of side s goes to
    # floor(4 + log2(s / 16)): side 4 → 2, 8 → 3, 16 → 4, 40 → 5 clamped to 4, 2 → 1 clamped to 2.
    features = [rng.normal(size=(2, 32 // 2 ** l, 32 // 2 ** l, 3)).astype(np.float32) for l in (2, 3, 4)]
    sides = np.array([[4.0, 8.0, 16.0], [40.0, 2.0, 8.0]])
    corners = rng.uniform(0.0, 12.0, (2, 3, 2))
    boxes = np.concatenate([corners, corners + sides[..., None]], axis=-1).astype(np.float32)
    levels = np.asarray(fpn_levels(boxes, min_level=2, max_level=4, canonical_size=16.0, canonical_level=4))
    np.testing.assert_array_equal(levels, [[2, 3, 4], [4, 2, 3]])
    got = multilevel_roi_align(features, boxes, output_size=2, min_level=2, canonical_size=16.0,
                               canonical_level=4, sampling_ratio=2)
    for b in range(2):
        for k in range(3):
            level = int(levels[b, k])
            want = roi_align(features[level - 2][b:b + 1], boxes[b:b + 1, k:k + 1], output_size=2,
                             spatial_scale=2.0 ** -level, sampling_ratio=2)
            np.testing.assert_allclose(got[b, k], want[0, 0], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------------------------------
# NMS against a plain greedy loop.

def _iou_reference(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _greedy_nms_reference(boxes, scores, threshold):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # Python's sort is stable, like torchvision's
    kept = []
    for i in order:
        if all(_iou_reference(boxes[i], boxes[j]) <= threshold for j in kept):
            kept.append(i)
    return kept


def _clustered_boxes(rng, n):
    centres = rng.uniform(-10.0, 60.0, (6, 2))[rng.integers(0, 6, n)] + rng.normal(0.0, 3.0, (n, 2))
    half = rng.uniform(2.0, 10.0, (n, 2))
    return np.concatenate([centres - half, centres + half], axis=1).astype(np.float32)


def test_nms_matches_greedy_loop():
    rng = np.random.default_rng(2)
    for trial, threshold in enumerate([0.3, 0.5, 0.7, 0.5]):
        boxes = _clustered_boxes(rng, 50)
        scores = np.round(rng.uniform(size=50), 1).astype(np.float32)  # many ties: order must follow the input
        valid = rng.uniform(size=50) > 0.2 if trial == 3 else np.ones(50, bool)
        real = np.flatnonzero(valid)
        want = [int(real[i]) for i in _greedy_nms_reference(boxes[real], scores[real], threshold)]
        # Room for all, and truncation; one tile, and tiles of 8 boxes (that must give the same result).
        for size, tile in [(50, 512), (50, 8), (4, 8)]:
            idx, ok = nms(jnp.asarray(boxes), jnp.asarray(scores), iou_threshold=threshold, max_output_size=size,
                          valid=jnp.asarray(valid), tile_size=tile)
            n = min(size, len(want))
            np.testing.assert_array_equal(np.asarray(idx)[np.asarray(ok)], want[:n])
            assert np.asarray(ok).sum() == n and np.all(np.asarray(idx)[n:] == 0)
    # IoU exactly at the threshold does not suppress (torchvision suppresses IoU > threshold only): boxes 0 and 1
    # overlap 2 / 4 = 0.5; box 2 duplicates box 1 at a lower score.
    boxes = np.float32([[0, 0, 1, 2], [0, 0, 2, 2], [0, 0, 2, 2]])
    idx, ok = nms(jnp.asarray(boxes), jnp.float32([0.5, 0.9, 0.1]), iou_threshold=0.5, max_output_size=4)
    np.testing.assert_array_equal(np.asarray(idx), [1, 0, 0, 0])
    np.testing.assert_array_equal(np.asarray(ok), [True, True, False, False])


def test_batched_nms_suppresses_within_classes_only():
    rng = np.random.default_rng(3)
    boxes = _clustered_boxes(rng, 40)
    scores = rng.permutation(40).astype(np.float32)
    classes = rng.integers(0, 3, 40)
    want = []
    for c in range(3):
        members = np.flatnonzero(classes == c)
        want += [int(members[i]) for i in _greedy_nms_reference(boxes[members], scores[members], 0.4)]
    want.sort(key=lambda i: -scores[i])
    idx, ok = batched_nms(jnp.asarray(boxes), jnp.asarray(scores), jnp.asarray(classes), iou_threshold=0.4,
                          max_output_size=40, tile_size=16)
    np.testing.assert_array_equal(np.asarray(idx)[np.asarray(ok)], want)


# --------------------------------------------------------------------------------------------------------------------
# Boxes and anchors.

def test_box_coding_hand_case_round_trip_and_clamp():
    anchor = jnp.array([[0.0, 0.0, 10.0, 10.0]])
    box = jnp.array([[5.0, 5.0, 15.0, 25.0]])
    # Centres (5, 5) → (10, 15), sizes 10 × 10 → 10 × 20: dx = 10·5/10, dy = 10·10/10, dw = 5·log 1, dh = 5·log 2.
    np.testing.assert_allclose(encode_boxes(box, anchor), [[5.0, 10.0, 0.0, 5 * math.log(2)]], rtol=1e-6)
    rng = np.random.default_rng(4)
    anchors = jnp.asarray(_random_boxes(rng, (20,), low=-5.0, high=50.0, max_size=30.0))
    boxes = jnp.asarray(_random_boxes(rng, (20,), low=-5.0, high=50.0, max_size=30.0))
    for weights in ((10.0, 10.0, 5.0, 5.0), (1.0, 1.0, 1.0, 1.0)):
        deltas = encode_boxes(boxes, anchors, weights=weights)
        np.testing.assert_allclose(decode_boxes(deltas, anchors, weights=weights), boxes, rtol=1e-5, atol=1e-4)
    # dw = 100 / 5 is clamped to log(1000 / 16): the width becomes 10 · 62.5 around the same centre.
    np.testing.assert_allclose(decode_boxes(jnp.array([[0.0, 0.0, 100.0, 0.0]]), anchor),
                               [[5.0 - 312.5, 0.0, 5.0 + 312.5, 10.0]], rtol=1e-5)


def test_box_iou_and_clip():
    a = jnp.array([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0]])
    b = jnp.array([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0]])
    # Overlap 1 over union 4 + 4 − 1; the zero-area pair gives 0, not NaN.
    np.testing.assert_allclose(box_iou(a, b), [[1 / 7, 1.0, 0.0], [0.0, 0.0, 0.0]], rtol=1e-6)
    rng = np.random.default_rng(5)
    p, q = _random_boxes(rng, (7,), low=0, high=9, max_size=6), _random_boxes(rng, (5,), low=0, high=9, max_size=6)
    want = [[_iou_reference(u, v) for v in q] for u in p]
    np.testing.assert_allclose(box_iou(jnp.asarray(p), jnp.asarray(q)), want, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(clip_boxes(jnp.array([[-3.0, 2.0, 50.0, 40.0]]), 30, 20), [[0.0, 2.0, 20.0, 30.0]])


def test_generate_anchors_follows_torchvision():
    level0, level1 = generate_anchors(feature_sizes=[(2, 3), (1, 1)], strides=[4, 8], sizes=[(32,), (64, 128)],
                                      aspect_ratios=(0.5, 1.0, 2.0))
    assert level0.shape == (2 * 3 * 3, 4) and level1.shape == (1 * 1 * 6, 4)
    # Ratio h/w = 0.5 at size 32: w = 32·√2 = 45.25, h = 22.63, rounded half-sizes 23 and 11 (torch.round).
    np.testing.assert_array_equal(level0[:3], [[-23, -11, 23, 11], [-16, -16, 16, 16], [-11, -23, 11, 23]])
    # Cell (row 1, column 2) is shifted by (2·4, 1·4); rows are cell-major.
    np.testing.assert_array_equal(level0[5 * 3 + 1], [-16 + 8, -16 + 4, 16 + 8, 16 + 4])
    np.testing.assert_array_equal(level1[2:4], [[-32, -32, 32, 32], [-64, -64, 64, 64]])
    with pytest.raises(ValueError, match="one entry per FPN level"):
        generate_anchors(feature_sizes=[(2, 2)], strides=[4, 8], sizes=[(32,)])


# --------------------------------------------------------------------------------------------------------------------
# Sampling and targets.

def test_sample_balanced_counts_and_uniformity():
    rng = np.random.default_rng(6)
    for num_pos, num_neg in [(40, 200), (3, 200), (5, 6), (0, 10), (20, 0)]:
        labels = np.full(300, -1)
        chosen = rng.permutation(300)
        labels[chosen[:num_pos]] = 1
        labels[chosen[num_pos:num_pos + num_neg]] = 0
        idx, ok = sample_balanced_indices(jax.random.PRNGKey(num_pos), jnp.asarray(labels), num_samples=32, positive_fraction=0.25)
        picked = np.asarray(idx)[np.asarray(ok)]
        want_pos = min(num_pos, 8)
        want_neg = min(num_neg, 32 - want_pos)
        assert len(set(picked.tolist())) == len(picked) == want_pos + want_neg
        np.testing.assert_array_equal(labels[picked], [1] * want_pos + [0] * want_neg)  # positives first
        mask = sample_balanced(jax.random.PRNGKey(num_pos), jnp.asarray(labels), num_samples=32,
                               positive_fraction=0.25)
        np.testing.assert_array_equal(np.flatnonzero(mask), np.sort(picked))
    # Every one of 40 positives is drawn with probability 8 / 40 (over 2000 keys the std is ~0.009).
    labels = jnp.asarray(np.r_[np.ones(40, int), np.zeros(60, int)])
    keys = jax.random.split(jax.random.PRNGKey(7), 2000)
    masks = jax.jit(jax.vmap(lambda k: ops.sample_balanced(k, labels, num_samples=32, positive_fraction=0.25)))(keys)
    frequency = np.asarray(masks).mean(axis=0)
    np.testing.assert_allclose(frequency[:40], 8 / 40, atol=0.05)
    np.testing.assert_allclose(frequency[40:], 24 / 60, atol=0.06)


def test_label_anchors_hand_case():
    gt = jnp.array([[20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 120.0],
                    [500.0, 500.0, 510.0, 510.0]])
    gt_valid = jnp.array([False, True, True, True])  # gt 0 is padding: it must match nothing
    anchors = jnp.array([[0.0, 0.0, 10.0, 10.0],      # IoU 1 with gt 1 → positive
                         [0.0, 0.0, 10.0, 5.0],       # IoU 0.5 → ignored
                         [0.0, 0.0, 10.0, 2.0],       # IoU 0.2 → negative
                         [20.0, 20.0, 30.0, 30.0],    # overlaps only the padding → negative
                         [100.0, 100.0, 110.0, 110.0]])  # IoU 0.5, but gt 2's best anchor → positive
    labels, matched = label_anchors(anchors, gt, gt_valid)
    np.testing.assert_array_equal(labels, [1, -1, 0, 0, 1])  # gt 3 overlaps nothing and adds no positive
    np.testing.assert_array_equal(np.asarray(matched)[[0, 1, 2, 4]], [1, 1, 1, 2])
    labels, _ = label_anchors(anchors, gt, gt_valid, allow_low_quality_matches=False)
    np.testing.assert_array_equal(labels, [1, -1, 0, 0, -1])


def test_rpn_targets_batched():
    rng = np.random.default_rng(8)
    anchors = jnp.asarray(np.concatenate(generate_anchors(feature_sizes=[(8, 8), (4, 4)], strides=[4, 8],
                                                          sizes=[(8,), (16,)])))
    gt = _random_boxes(rng, (2, 3), low=0.0, high=20.0, max_size=12.0) + np.float32([0, 0, 4, 4])
    gt_valid = np.array([[True, True, False], [True, False, False]])
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    targets = jax.jit(jax.vmap(lambda k, g, v: ops.rpn_targets(k, anchors, g, v, num_samples=64)))(keys, gt, gt_valid)
    targets = jax.device_get(targets)
    for b in range(2):
        labels, matched = jax.device_get(label_anchors(anchors, gt[b], gt_valid[b]))
        pos = labels == 1
        np.testing.assert_array_equal(targets["objectness"][b], pos)
        assert targets["weights"][b].sum() == min(pos.sum(), 32) + min((labels == 0).sum(), 64 - min(pos.sum(), 32))
        want = np.where(pos[:, None], encode_boxes(gt[b][matched], anchors, weights=(1.0, 1.0, 1.0, 1.0)), 0.0)
        np.testing.assert_allclose(targets["box_targets"][b], want, rtol=1e-5, atol=1e-6)


def test_sample_rois_adds_ground_truth_and_labels_by_iou():
    rng = np.random.default_rng(9)
    gt = np.float32([[4.0, 4.0, 20.0, 16.0], [30.0, 10.0, 44.0, 30.0], [0.0, 0.0, 1.0, 1.0]])
    gt_classes, gt_valid = np.array([3, 1, 2]), np.array([True, True, False])
    proposals = _random_boxes(rng, (40,), low=0.0, high=40.0, max_size=16.0)
    none_valid = jax.device_get(sample_rois(jax.random.PRNGKey(0), proposals, np.zeros(40, bool), gt, gt_classes,
                                            gt_valid, num_samples=16, positive_fraction=0.25))
    # Only the two real ground-truth boxes are candidates: both foreground, with zero regression targets.
    assert none_valid["weights"].sum() == 2
    np.testing.assert_array_equal(np.sort(none_valid["classes"][:2]), [1, 3])
    np.testing.assert_allclose(none_valid["rois"][:2], gt[none_valid["matched_gt"][:2]])
    np.testing.assert_allclose(none_valid["box_targets"][:2], 0.0, atol=1e-6)
    out = jax.device_get(sample_rois(jax.random.PRNGKey(1), proposals, np.ones(40, bool), gt, gt_classes, gt_valid,
                                     num_samples=16, positive_fraction=0.25))
    iou = np.array([[_iou_reference(r, g) for g in gt[:2]] for r in out["rois"]])
    fg = out["classes"] > 0
    assert out["weights"].sum() == 16 and 2 <= fg.sum() <= 4 and np.all(fg[:fg.sum()])  # foreground first
    np.testing.assert_array_equal(out["classes"][fg], gt_classes[out["matched_gt"][fg]])
    assert np.all(iou[fg].max(axis=1) >= 0.5) and np.all(iou[~fg].max(axis=1) < 0.5)
    want = np.asarray(encode_boxes(gt[out["matched_gt"]], out["rois"]))
    np.testing.assert_allclose(out["box_targets"][fg], want[fg], rtol=1e-5, atol=1e-5)


def test_mask_targets_crop_the_matched_instance():
    masks = np.zeros((3, 12, 12), np.float32)
    masks[1, 2:6, 3:9] = 1.0  # rows 2..5, columns 3..8
    masks[0, 5:, :] = 1.0
    masks[2] = np.random.default_rng(10).uniform(size=(12, 12)) > 0.5
    roi = jnp.array([[0.0, 0.0, 6.0, 6.0]])
    # Bins are one pixel; the two samples of bin j sit at j ± 0.25 (pixel centres at integers once shifted by 0.5),
    # so bin j reads (0.75·m[j] + 0.25·m[j−1] + 0.75·m[j] + 0.25·m[j+1]) / 2 along each axis: 0.125 at j = 2,
    # ≥ 0.875 at j = 3..5 — thresholded at 0.5, rows 2..5 and columns 3..5.
    want = np.zeros((6, 6))
    want[2:6, 3:6] = 1.0
    np.testing.assert_array_equal(mask_targets(jnp.asarray(masks), roi, jnp.array([1]), mask_size=6)[0], want)
    rois = jnp.array([[0.0, 0.0, 6.0, 6.0], [2.0, 1.0, 11.0, 9.0], [-2.0, 3.0, 7.0, 12.5]])
    matched = jnp.array([2, 0, 1])
    soft = mask_targets(jnp.asarray(masks), rois, matched, mask_size=4, binarize=False)
    for r in range(3):
        want = roi_align_indexed(jnp.asarray(masks)[:, :, :, None], rois[r:r + 1], matched[r:r + 1], output_size=4)
        np.testing.assert_allclose(soft[r], want[0, ..., 0], rtol=1e-6)
