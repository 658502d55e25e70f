"""Values of the U-Net weight map, the border-aware targets and the normalised distance map against hand-worked
cases and brute force."""
from __future__ import annotations

import numpy as np
import pytest

from seg_jax.data.derived.targets import border_targets, instance_distance, mask_and_border, unet_weight_map


def _disk(shape: tuple[int, int], center: tuple[int, int], radius: int) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


def _two_disks(gap: int) -> np.ndarray:
    """Disks of radius 4 on row 10; disk 1 spans columns 3..11, disk 2 starts `gap` background pixels later."""
    instances = np.zeros((21, 31), np.int32)
    instances[_disk(instances.shape, (10, 7), 4)] = 1
    instances[_disk(instances.shape, (10, 16 + gap), 4)] = 2
    return instances


def _distances_to_instances(instances: np.ndarray) -> np.ndarray:
    """Brute force: float `[K, H, W]` distance from every pixel to the nearest pixel of instance k (ids 1..K)."""
    pixels = np.argwhere(np.ones(instances.shape, bool))
    out = []
    for k in range(1, instances.max() + 1):
        members = np.argwhere(instances == k)
        squared = ((pixels[:, None, :] - members[None, :, :]) ** 2).sum(-1).min(axis=1)
        out.append(np.sqrt(squared).reshape(instances.shape))
    return np.stack(out)


def _random_instances(seed: int, shape: tuple[int, int] = (14, 16), count: int = 5) -> np.ndarray:
    """Overlapping random rectangles (later ones on top): touching instances, gaps of 0..several pixels."""
    rng = np.random.default_rng(seed)
    instances = np.zeros(shape, np.int32)
    for k in range(1, count + 1):
        top, left = rng.integers(0, shape[0] - 3), rng.integers(0, shape[1] - 3)
        instances[top : top + rng.integers(2, 7), left : left + rng.integers(2, 7)] = k
    return np.unique(instances, return_inverse=True)[1].reshape(shape).astype(np.int32)  # ids 1..K, no gaps


def test_weight_map_on_two_disks_matches_hand_values():
    instances = _two_disks(gap=4)  # background columns 12..15 on row 10; disk 2 spans columns 16..24
    weights = unet_weight_map(instances, class_weights=np.array([0.5, 2.0]), w0=10.0, sigma=5.0)
    # Inside the gap on row 10, d1 + d2 = gap + 1 = 5 pixels: w = 0.5 + 10 exp(-25 / (2 · 25)).
    np.testing.assert_allclose(weights[10, 12:16], 0.5 + 10 * np.exp(-0.5), rtol=1e-6)
    # Left of disk 1 at column 1: d1 = 3 - 1 = 2, d2 = 16 - 1 = 15, so w = 0.5 + 10 exp(-17² / 50).
    np.testing.assert_allclose(weights[10, 1], 0.5 + 10 * np.exp(-289 / 50), rtol=1e-6)
    # Object pixels get their class weight only.
    np.testing.assert_array_equal(weights[instances > 0], 2.0)
    assert weights.dtype == np.float32


def test_weight_map_without_separation_term_is_the_class_weight():
    instances = _two_disks(gap=2)
    labels = np.where(instances == 2, 2, instances > 0).astype(np.int32)
    labels[0, 0] = 255
    expected = np.array([0.25, 1.5, 3.0])[np.where(labels == 255, 0, labels)]
    expected[0, 0] = 0.0  # ignored pixel
    got = unet_weight_map(instances, class_weights=np.array([0.25, 1.5, 3.0]), labels=labels, w0=0.0)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # One instance: d2 is undefined and the term vanishes; no class weights means w_c = 1.
    np.testing.assert_array_equal(unet_weight_map(np.where(instances == 1, 1, 0)), 1.0)
    np.testing.assert_array_equal(unet_weight_map(np.zeros((5, 6), np.int32)), 1.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_weight_map_matches_brute_force_distances(seed):
    instances = _random_instances(seed)
    labels = (instances > 0).astype(np.int32) + (instances % 2 == 1)  # classes 0, 1, 2
    class_weights = np.array([0.3, 1.0, 2.5])
    distances = np.sort(_distances_to_instances(instances), axis=0)
    d1, d2 = distances[0], distances[1]
    separation = np.where(instances == 0, 7.0 * np.exp(-((d1 + d2) ** 2) / (2 * 2.0**2)), 0.0)
    expected = class_weights[labels] + separation
    got = unet_weight_map(instances, class_weights=class_weights, labels=labels, w0=7.0, sigma=2.0)
    # The term is truncated where d2 > 5 sigma: it is below w0 · exp(-12.5) there.
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=7.0 * np.exp(-12.5))


def test_weight_map_rejects_labels_without_a_class_weight():
    with pytest.raises(ValueError, match="labels value 3 has no entry in class_weights"):
        unet_weight_map(np.ones((3, 3), np.int32), class_weights=np.ones(2), labels=np.full((3, 3), 3))
    with pytest.raises(ValueError, match="instances must be >= 0"):
        unet_weight_map(-np.ones((3, 3), np.int32))


def test_border_targets_on_squares_at_known_gaps():
    instances = np.zeros((11, 30), np.int32)
    instances[2:9, 2:9] = 1  # 7 x 7 squares, rows 2..8
    instances[2:9, 11:18] = 2  # 2-pixel gap (columns 9, 10) to square 1: border with width 2
    instances[2:9, 21:28] = 3  # 3-pixel gap (columns 18..20) to square 2: stays background
    expected = np.zeros_like(instances)
    for left in (2, 11, 21):
        expected[2:9, left : left + 7] = 2  # a 2-pixel band inside each outline ...
        expected[4:7, left + 2 : left + 5] = 1  # ... around a 3 x 3 interior
    # Gap pixels on rows 2..8 have d1 + d2 = 3 <= width + 1; the diagonal neighbours above/below the gap have
    # d1 + d2 = sqrt(2) + sqrt(5) > 3.
    expected[2:9, 9:11] = 2
    np.testing.assert_array_equal(border_targets(instances, width=2), expected)
    mask, border = mask_and_border(instances, width=2)
    np.testing.assert_array_equal(mask, instances > 0)
    np.testing.assert_array_equal(border, expected == 2)


def test_thin_instance_keeps_its_deepest_pixels_as_interior():
    instances = np.zeros((9, 12), np.int32)
    instances[3:6, 2:9] = 1  # 3 pixels thick: every pixel is within 2 of the outline
    expected = np.where(instances > 0, 2, 0)
    # Deepest pixels: the middle row is 2 pixels from the long sides; its end pixels (columns 2, 8) are 1 pixel
    # from the short ends, the others (columns 3..7) are 2 pixels away.
    expected[4, 3:8] = 1
    np.testing.assert_array_equal(border_targets(instances, width=2), expected)


@pytest.mark.parametrize("seed,width", [(2, 1), (3, 2)])
def test_border_targets_match_the_definition_by_brute_force(seed, width):
    instances = _random_instances(seed)
    per_instance = _distances_to_instances(instances)
    ordered = np.sort(per_instance, axis=0)
    gap = (instances == 0) & (ordered[0] + ordered[1] <= width + 1)
    # Distance of an instance pixel to the nearest pixel outside its instance, by brute force.
    pixels = np.argwhere(np.ones(instances.shape, bool))
    inner = np.full(instances.shape, np.inf)
    for k in range(1, instances.max() + 1):
        outside = np.argwhere(instances != k)
        nearest = np.sqrt(((pixels[:, None] - outside[None]) ** 2).sum(-1).min(axis=1)).reshape(instances.shape)
        inner = np.where(instances == k, nearest, inner)
    expected = np.where(gap | ((instances > 0) & (inner <= width)), 2, np.where(instances > 0, 1, 0))
    for k in range(1, instances.max() + 1):
        deepest = inner[instances == k].max()
        if deepest <= width:
            expected[(instances == k) & (inner == deepest)] = 1
    np.testing.assert_array_equal(border_targets(instances, width=width), expected)


def test_instance_distance_of_a_square_and_two_touching_halves_by_hand():
    instances = np.zeros((9, 12), np.int32)
    instances[2:7, 1:6] = 1      # a 5 x 5 square: outline 1 px from outside, centre 3 px
    instances[2:6, 6:10] = 2     # touches square 1 along column 5 | 6: 4 x 4, deepest 2 px
    got = instance_distance(instances)
    square = np.array([[1, 1, 1, 1, 1], [1, 2, 2, 2, 1], [1, 2, 3, 2, 1], [1, 2, 2, 2, 1], [1, 1, 1, 1, 1]]) / 3
    np.testing.assert_allclose(got[2:7, 1:6], square, rtol=1e-6)
    np.testing.assert_allclose(got[2:6, 6:10], np.array([[1, 1, 1, 1], [1, 2, 2, 1], [1, 2, 2, 1],
                                                         [1, 1, 1, 1]]) / 2, rtol=1e-6)
    assert got.dtype == np.float32 and (got[instances == 0] == 0).all()


def test_instance_distance_ignores_the_image_edge_and_fills_a_full_image():
    # A 3 x 4 instance spanning the rows, against the left edge: only columns 4.. are outside it (no image edge
    # is an outline), so every row reads 4, 3, 2, 1 px from the left, the deepest pixels on the edge.
    instances = np.zeros((3, 6), np.int32)
    instances[:, :4] = 7
    np.testing.assert_allclose(instance_distance(instances), np.tile([1, 0.75, 0.5, 0.25, 0, 0], (3, 1)), rtol=1e-6)
    np.testing.assert_array_equal(instance_distance(np.ones((4, 5), np.int32)), np.ones((4, 5), np.float32))


@pytest.mark.parametrize("seed", [4, 5])
def test_instance_distance_matches_brute_force(seed):
    instances = _random_instances(seed)
    pixels = np.argwhere(np.ones(instances.shape, bool))
    expected = np.zeros(instances.shape)
    for k in range(1, instances.max() + 1):
        outside = np.argwhere(instances != k)
        nearest = np.sqrt(((pixels[:, None] - outside[None]) ** 2).sum(-1).min(axis=1)).reshape(instances.shape)
        expected = np.where(instances == k, nearest / nearest[instances == k].max(), expected)
    np.testing.assert_allclose(instance_distance(instances), expected, rtol=1e-6)
