"""`derived.instance_statistics` on hand-made arrays: histograms, areas, touching, counts, noise and SNR."""
from __future__ import annotations

import numpy as np
import pytest

from seg_jax.data.derived import instance_statistics as stats

# Instances of a 5 x 6 image: 1 and 2 share a pixel edge; 3 meets 2 only at a corner (diagonal: not touching);
# 9 (ids need not be consecutive) stands alone.
INSTANCES = np.array([[1, 1, 2, 0, 0, 0],
                      [1, 1, 2, 0, 9, 9],
                      [0, 0, 0, 3, 0, 9],
                      [0, 0, 0, 3, 0, 0],
                      [0, 0, 0, 0, 0, 0]])


def test_touching_needs_a_shared_pixel_edge():
    np.testing.assert_array_equal(stats.touching_instances(INSTANCES), [1, 2])
    np.testing.assert_array_equal(stats.touching_instances(np.zeros((3, 3), int)), [])


def test_image_statistics_of_a_hand_made_image():
    label = (INSTANCES > 0).astype(np.int32)
    label[4, 5] = 255  # ignored: counted nowhere
    grey = np.full((5, 6), 10, np.uint8)
    grey[INSTANCES > 0] = 200
    grey[0, 0] = 201
    image = np.stack([grey, grey, grey], axis=-1)
    image[0, 1] = (100, 101, 102)  # channel mean 101
    out = stats.image_statistics(image=image, label=label, instances=INSTANCES)
    np.testing.assert_array_equal(out.areas, [4, 2, 2, 3])  # ids 1, 2, 3, 9 in increasing order
    np.testing.assert_array_equal(out.touching, [True, True, False, False])
    assert out.touching_fraction == 0.5
    np.testing.assert_array_equal(out.counts, [4])
    expected_foreground = np.zeros(256, np.int64)
    expected_foreground[[200, 201, 101]] = [9, 1, 1]
    np.testing.assert_array_equal(out.foreground_histogram, expected_foreground)
    expected_background = np.zeros(256, np.int64)
    expected_background[10] = 30 - 11 - 1
    np.testing.assert_array_equal(out.background_histogram, expected_background)
    # A flat background has no measurable noise: SNR undefined.
    assert np.isnan(out.snr[0])


def test_noise_std_is_the_robust_std_of_neighbour_differences():
    # One background row 10, 11, 13, 16, 20: differences 1, 2, 3, 4, median 2.5, absolute deviations
    # 1.5, 0.5, 0.5, 1.5 with median 1, so the noise std is 1.4826 / sqrt(2).
    grey = np.array([[10, 11, 13, 16, 20, 99]], np.float64)
    background = np.array([[True] * 5 + [False]])
    assert stats.noise_std(grey, background) == pytest.approx(1.4826 / np.sqrt(2))
    assert np.isnan(stats.noise_std(grey, np.zeros_like(background)))
    # On Gaussian noise over a smooth ramp (uneven illumination), it recovers the noise std.
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 60, 200)[None, :] + np.linspace(0, 30, 200)[:, None]
    assert stats.noise_std(ramp + 5 * rng.standard_normal((200, 200)), np.ones((200, 200), bool)) == (
        pytest.approx(5, rel=0.05))


def test_snr_is_median_contrast_over_noise():
    rng = np.random.default_rng(1)
    instances = np.zeros((64, 64), np.int32)
    instances[20:40, 20:40] = 1
    grey = 20 + 4 * rng.standard_normal((64, 64)) + 60 * (instances > 0)
    image = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    out = stats.image_statistics(image=image, label=instances, instances=instances)
    background, foreground = image[instances == 0].astype(float), image[instances > 0].astype(float)
    noise = stats.noise_std(image.astype(float), instances == 0)
    assert noise == pytest.approx(4, rel=0.1)
    assert out.snr[0] == pytest.approx((np.median(foreground) - np.median(background)) / noise)
    assert out.snr[0] == pytest.approx(15, rel=0.12)


def test_dataset_statistics_concatenates_images():
    image = np.zeros((5, 6, 3), np.uint8)
    empty = np.zeros((5, 6), np.int32)
    examples = [{"image": image, "label": (INSTANCES > 0).astype(int), "instances": INSTANCES, "id": "a"},
                {"image": image, "label": empty, "instances": empty, "id": "b"}]
    out = stats.dataset_statistics(examples)
    np.testing.assert_array_equal(out.counts, [4, 0])
    np.testing.assert_array_equal(out.areas, [4, 2, 2, 3])
    assert out.background_histogram[0] == (30 - 11) + 30 and out.foreground_histogram[0] == 11
    assert np.isnan(out.snr).all()  # no foreground in "b", no noise in "a"
    with pytest.raises(ValueError, match="example 'c' has no instance ids"):
        stats.dataset_statistics([{"image": image, "label": empty, "id": "c"}])
    with pytest.raises(ValueError, match="no examples"):
        stats.dataset_statistics([])
