"""Post-processing to instances: values on hand-built probability and distance maps; the Otsu foreground of the
classical baselines against scikit-image."""
from __future__ import annotations

import numpy as np
import pytest

from seg_jax.data.derived.targets import border_targets
from seg_jax.postprocess.instances import (instance_scores, instances_from_semantic, instances_per_class,
                                           instances_with_scores)
from seg_jax.postprocess.threshold import otsu_probabilities


def _disk(shape: tuple[int, int], center: tuple[int, int], radius: int) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


def _touching_disks() -> np.ndarray:
    """Two overlapping disks of radius 7, centres 12 pixels apart: one foreground blob with a 7-pixel neck, split
    between the instances at column 18, halfway between the centres."""
    shape = (24, 38)
    union = _disk(shape, (12, 12), 7) | _disk(shape, (12, 24), 7)
    return np.where(union, np.where(np.arange(shape[1]) < 18, 1, 2), 0).astype(np.int32)


def _two_class_probabilities(foreground: np.ndarray) -> np.ndarray:
    p = np.where(foreground, 0.9, 0.1)
    return np.stack([1 - p, p], axis=-1)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


def _assert_recovers(pred: np.ndarray, true: np.ndarray, *, min_iou: float) -> None:
    """Each true instance has its own predicted instance (the one it overlaps most) with IoU >= min_iou."""
    assert pred.max() == true.max()
    for k in range(1, true.max() + 1):
        best = np.bincount(pred[true == k]).argmax()
        assert _iou(pred == best, true == k) >= min_iou, k


def test_watershed_splits_touching_disks_that_connected_components_merge():
    true = _touching_disks()
    probabilities = _two_class_probabilities(true > 0)
    merged = instances_from_semantic(probabilities, method="connected_components")
    np.testing.assert_array_equal(merged, (true > 0).astype(np.int32))  # one instance: the whole blob
    peaks = instances_from_semantic(probabilities, method="watershed", markers="distance_peaks")
    _assert_recovers(peaks, true, min_iou=0.95)
    # A disk of radius 4 erases the 7-pixel neck and leaves one seed per disk.
    eroded = instances_from_semantic(probabilities, method="watershed", markers="erosion", erosion_radius=4)
    _assert_recovers(eroded, true, min_iou=0.95)


def test_watershed_on_border_aware_probabilities():
    true = _touching_disks()
    # Channels background, interior, border; border pixels are also fairly likely interior, so only interior
    # minus border (0.15 there) separates the seeds, not the interior probability alone (0.55).
    probabilities = np.array([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.55, 0.4]])[border_targets(true)]
    assert instances_from_semantic(probabilities, border_index=2).max() == 1  # components merge
    split = instances_from_semantic(
        probabilities, method="watershed", markers="interior", elevation="border", border_index=2
    )
    _assert_recovers(split, true, min_iou=0.9)


def test_seedless_component_is_kept_and_small_instances_removed():
    foreground = _touching_disks() > 0
    foreground[1:3, 33:36] = True  # a 2 x 3 blob, which erosion by 4 leaves without a seed
    probabilities = _two_class_probabilities(foreground)
    kept = instances_from_semantic(probabilities, method="watershed", markers="erosion", erosion_radius=4)
    assert kept.max() == 3 and np.unique(kept[1:3, 33:36]).size == 1 and kept[1, 33] > 0
    removed = instances_from_semantic(
        probabilities, method="watershed", markers="erosion", erosion_radius=4, min_size=7
    )
    assert removed.max() == 2 and (removed[1:3, 33:36] == 0).all()  # 6 pixels < 7, ids renumbered 1..2


def test_morphology_options():
    squares = np.zeros((12, 22), bool)
    squares[2:9, 2:9] = squares[2:9, 13:20] = True  # 7 x 7 squares, 4 pixels apart
    bridged = squares.copy()
    bridged[5, 9:13] = True  # a 1-pixel-thick bridge joins them
    assert instances_from_semantic(_two_class_probabilities(bridged)).max() == 1
    # Opening with a disk of radius 1 (a plus sign): erosion removes the bridge and the squares' outlines, and
    # dilation restores the outlines but not the corners, nor the middle two pixels of the bridge (its end pixels
    # come back from the squares' edges).
    expected = squares.astype(np.int32) + (np.arange(22) >= 11) * squares
    expected[5, [9, 12]] = [1, 2]
    for corner_row, corner_col in np.ndindex(2, 4):
        expected[(2, 8)[corner_row], (2, 8, 13, 19)[corner_col]] = 0
    np.testing.assert_array_equal(
        instances_from_semantic(_two_class_probabilities(bridged), opening_radius=1), expected
    )
    # Closing with radius 1 fills a 2-pixel gap between rows 3..7 (the plus sign dilates into the gap from both
    # sides but not diagonally, so the gap's top and bottom rows erode away again).
    near = np.zeros_like(squares)
    near[2:9, 2:9] = near[2:9, 11:18] = True  # 2 pixels apart
    closed = instances_from_semantic(_two_class_probabilities(near), closing_radius=1)
    expected = near.copy()
    expected[3:8, 9:11] = True
    np.testing.assert_array_equal(closed, expected.astype(np.int32))
    ring = squares.copy()
    ring[4:7, 4:7] = False  # a 3 x 3 hole
    filled = instances_from_semantic(_two_class_probabilities(ring), fill_holes=True)
    np.testing.assert_array_equal(filled, squares.astype(np.int32) + (np.arange(22) >= 11) * squares)


def test_instances_per_class_separates_touching_objects_of_different_classes():
    classes = np.zeros((12, 20), np.int32)
    classes[2:7, 2:7] = 1
    classes[2:7, 7:12] = 2  # touches the first square
    classes[8:11, 14:18] = 1
    probabilities = np.eye(3)[classes] * 0.7 + 0.1
    instances, class_of_instance = instances_per_class(probabilities)
    # Class 1 is labelled first (ids 1, 2 in raster order), then class 2 (id 3).
    expected = np.zeros_like(classes)
    expected[2:7, 2:7], expected[8:11, 14:18], expected[2:7, 7:12] = 1, 2, 3
    np.testing.assert_array_equal(instances, expected)
    np.testing.assert_array_equal(class_of_instance, [0, 1, 1, 2])
    np.testing.assert_array_equal(class_of_instance[instances], classes)


def test_instance_scores_are_mean_probabilities():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(3), size=(6, 7)).astype(np.float32)
    instances = rng.integers(0, 4, size=(6, 7))
    instances[0, :3] = [1, 2, 3]  # every id present
    expected = [np.mean([1 - probabilities[y, x, 0] for y, x in np.argwhere(instances == k)]) for k in (1, 2, 3)]
    np.testing.assert_allclose(instance_scores(probabilities, instances), expected, rtol=1e-5)
    class_of_instance = np.array([0, 2, 1, 2])
    expected = [
        np.mean([probabilities[y, x, class_of_instance[k]] for y, x in np.argwhere(instances == k)])
        for k in (1, 2, 3)
    ]
    got = instance_scores(probabilities, instances, class_of_instance=class_of_instance)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_clear_errors():
    probabilities = _two_class_probabilities(np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="unknown method 'snake'; valid: connected_components, watershed"):
        instances_from_semantic(probabilities, method="snake")
    with pytest.raises(ValueError, match="markers='interior' needs border_index"):
        instances_from_semantic(probabilities, method="watershed", markers="interior")
    with pytest.raises(ValueError, match="border_index 2 is not an object channel"):
        instances_from_semantic(probabilities, border_index=2)


def _cones(shape: tuple[int, int], centres: list[tuple[float, float]], radius: float) -> np.ndarray:
    """A hand-made predicted distance map: the highest of cones 1 - r / radius (clipped at 0) around `centres`."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.max([np.clip(1 - np.hypot(yy - y, xx - x) / radius, 0, None) for y, x in centres], axis=0)


def test_predicted_distance_watershed_splits_two_touching_disks():
    true = _touching_disks()
    probabilities = _two_class_probabilities(true > 0)
    # Peaks 1 at the centres, a valley of 1 - 6/7 = 0.14 on the contact column 18, noise below peak_height.
    rng = np.random.default_rng(0)
    distance = (_cones(true.shape, [(12, 12), (12, 24)], 7.0) + rng.uniform(0, 0.04, true.shape)).astype(np.float32)
    assert instances_from_semantic(probabilities, distance, method="connected_components").max() == 1
    split = instances_from_semantic(probabilities, distance, method="watershed", markers="predicted_distance",
                                    elevation="predicted_distance", marker_threshold=0.3, peak_height=0.1)
    assert split.max() == 2
    _assert_recovers(split, true, min_iou=0.9)
    # The same through the evaluators' entry point, with a score per instance.
    instances, scores, class_of = instances_with_scores(probabilities, distance, method="watershed",
                                                        markers="predicted_distance", elevation="predicted_distance")
    np.testing.assert_array_equal(instances, instances_from_semantic(
        probabilities, distance, method="watershed", markers="predicted_distance", elevation="predicted_distance"))
    assert scores.shape == (2,) and class_of.tolist() == [0, 1, 1]


def test_peak_height_merges_shallow_bumps_and_threshold_drops_low_peaks():
    true = _touching_disks()
    probabilities = _two_class_probabilities(true > 0)
    # Flat-topped disks (1 within 3.5 px of the centres, 0.29 on the contact column) with two bumps of 0.05 on
    # each top, 4 px apart: each bump pair dips about 0.04 between its peaks, so h = 0.1 merges them, h = 0.02 not.
    yy, xx = np.mgrid[: true.shape[0], : true.shape[1]]
    bumps = sum(0.05 * np.exp(-((yy - 12) ** 2 + (xx - x) ** 2) / 2) for x in (10, 14, 22, 26))
    distance = (np.clip(2 * _cones(true.shape, [(12, 12), (12, 24)], 7.0), 0, 1) + bumps).astype(np.float32)
    options = dict(method="watershed", markers="predicted_distance", elevation="predicted_distance",
                   marker_threshold=0.3)
    assert instances_from_semantic(probabilities, distance, peak_height=0.02, **options).max() == 4
    merged = instances_from_semantic(probabilities, distance, peak_height=0.1, **options)
    _assert_recovers(merged, true, min_iou=0.9)
    # peak_height 0: the seeds are the regions above marker_threshold; one joins both disks above 0.1 (0.29).
    assert instances_from_semantic(probabilities, distance, peak_height=0.0, **{**options, "marker_threshold": 0.1}
                                   ).max() == 1
    # A disk whose peak stays under marker_threshold gets no seed and is kept whole (with its neighbour).
    low = np.where(np.arange(true.shape[1]) < 18, distance * 0.2, distance).astype(np.float32)
    assert instances_from_semantic(probabilities, low, peak_height=0.1, **options).max() == 1


def test_predicted_distance_needs_the_map():
    probabilities = _two_class_probabilities(np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="markers='predicted_distance' needs the predicted distance map"):
        instances_from_semantic(probabilities, method="watershed", markers="predicted_distance")
    with pytest.raises(ValueError, match="elevation='predicted_distance' needs the predicted distance map"):
        instances_from_semantic(probabilities, method="watershed", elevation="predicted_distance")
    with pytest.raises(ValueError, match=r"distance must be \[H, W\] = \(4, 4\)"):
        instances_from_semantic(probabilities, np.zeros((4, 5)), method="watershed", markers="predicted_distance")


def test_otsu_probabilities_threshold_the_grey_level_like_skimage():
    from skimage.filters import threshold_otsu
    rng = np.random.default_rng(1)
    true = _touching_disks()
    level = np.where(true > 0, 150, 40) + rng.normal(0, 25, true.shape)
    image = np.clip(np.stack([level, level * 0.9, level * 0.8], -1), 0, 255).astype(np.uint8)
    grey = image.astype(np.float64).mean(-1)
    expected = grey > threshold_otsu(grey)
    got = otsu_probabilities(image)
    assert got.dtype == np.float32 and got.shape == (*true.shape, 2)
    np.testing.assert_array_equal(got[..., 1], expected)
    np.testing.assert_array_equal(got[..., 0], ~expected)
    np.testing.assert_array_equal(otsu_probabilities(image, foreground="dark")[..., 1], ~expected)
    # Only valid pixels set the threshold and may be foreground.
    valid = np.ones(true.shape, bool)
    valid[:, :9] = False
    expected = (grey > threshold_otsu(grey[valid])) & valid
    np.testing.assert_array_equal(otsu_probabilities(image, valid=valid)[..., 1], expected)
    assert not otsu_probabilities(np.full((3, 3, 3), 7, np.uint8))[..., 1].any()  # one grey level: no foreground
    with pytest.raises(ValueError, match="unknown foreground 'pale'; valid: bright, dark"):
        otsu_probabilities(image, foreground="pale")
