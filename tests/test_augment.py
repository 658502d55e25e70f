"""Configurable training augmentation (`data.augment`): the default run's batches as before, geometry against NumPy
(np.rot90, slicing, hand-worked bilinear), labels never interpolated and every key moved together, MMSeg's
class-aware crop, torchvision's resized-crop windows, photometric transforms against hand formulas and `colorsys`,
determinism per (seed, step), and the config checks."""
from __future__ import annotations

import colorsys

import pathlib

import numpy as np
import pytest
from PIL import Image

from seg_jax import data
from seg_jax.data.config import augment_config, base_config
from seg_jax.data.pipeline import augment, batches, photometric, policy, warp

IGNORE = 255
GEOMETRIC = dict(cat_max_ratio=0.9, vflip=True, rot90=True, resized_crop=dict(p=0.5), rotate=dict(p=1.0, range=(-45.0, 45.0)),
                 elastic=dict(p=1.0, alpha=4.0, grid=3))
MICROSCOPY = dict(vflip=True, rot90=True, elastic=dict(p=0.5, alpha=4.0, grid=3),
                  intensity=dict(p=0.5, range=(0.8, 1.2)), brightness=dict(p=0.5, range=(-20.0, 20.0)),
                  contrast=dict(p=0.5, range=(0.7, 1.3)), gamma=dict(p=0.5, range=(0.7, 1.5)),
                  blur=dict(p=0.3, range=(0.3, 1.2)), gaussian_noise=dict(p=0.3, range=(0.0, 6.0)),
                  poisson_noise=dict(p=0.3, range=(30.0, 300.0)))


def options(**sections) -> policy.AugmentOptions:
    """AugmentOptions of `data.augment` with `sections` updated (a dict updates that section's keys)."""
    cfg = augment_config()
    for key, value in sections.items():
        if isinstance(value, dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    return policy.augment_options(cfg)


PALETTE = np.array([[0, 0, 0], [250, 0, 0], [0, 250, 0], [0, 0, 250], [250, 250, 0]], np.uint8)


def coded_example(rng, height=24, width=24, classes=5) -> dict[str, np.ndarray]:
    """Every key a function of the label: instances = label + 1, weights = 0.5 (label + 1), image = PALETTE[label];
    labels in blocks of 4 px so that most pixels have a uniform neighbourhood."""
    blocks = rng.integers(0, classes, (-(-height // 4), -(-width // 4)))
    label = np.kron(blocks, np.ones((4, 4), np.int64))[:height, :width].astype(np.int32)
    return {"image": PALETTE[label], "label": label, "instances": (label + 1).astype(np.int32),
            "weights": (0.5 * (label + 1)).astype(np.float32), "id": "x"}


def random_example(rng, height=12, width=12) -> dict[str, np.ndarray]:
    return {"image": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
            "label": rng.integers(0, 5, (height, width)).astype(np.int32),
            "instances": rng.integers(0, 9, (height, width)).astype(np.int32),
            "weights": rng.uniform(0.5, 2, (height, width)).astype(np.float32),
            "distance": rng.uniform(0.1, 1, (height, width)).astype(np.float32)}  # the distance target


def run(example, seed, opts, *, crop=(16, 16), scale_range=(1.0, 1.0), hflip=False):
    return policy.augment_example(example, np.random.default_rng(seed), crop_size=crop, scale_range=scale_range,
                                  hflip=hflip, ignore_index=IGNORE, options=opts)


# ---------------------------------------------------------------- the default run is unchanged


def old_train_transform(example, rng, *, crop_size, scale_range, hflip, mean, std, ignore_index):
    """The training transform before `data.augment` (commit 0f9377d), written out with PIL and NumPy."""
    example = dict(example)
    example.setdefault("weights", np.ones(example["label"].shape, np.float32))
    height, width = example["image"].shape[:2]
    scale = float(rng.uniform(scale_range[0], scale_range[1]))
    size = max(1, round(height * scale)), max(1, round(width * scale))
    top = int(rng.integers(0, max(size[0] - crop_size[0], 0) + 1))
    left = int(rng.integers(0, max(size[1] - crop_size[1], 0) + 1))
    flip = bool(hflip) and bool(rng.random() < 0.5)
    out = {}
    for key in ("image", "label", "instances", "weights"):
        if key not in example:
            continue
        value = example[key]
        if value.shape[:2] != size:
            resample = Image.BILINEAR if key == "image" else Image.NEAREST
            value = np.asarray(Image.fromarray(value).resize((size[1], size[0]), resample), dtype=value.dtype)
        extra = [(0, max(crop_size[0] - size[0], 0)), (0, max(crop_size[1] - size[1], 0))] + [(0, 0)] * (value.ndim - 2)
        value = np.pad(value, extra, constant_values=ignore_index if key == "label" else 0)
        value = value[top:top + crop_size[0], left:left + crop_size[1]]
        out[key] = np.ascontiguousarray(value[:, ::-1] if flip else value)
    result = {"image": (out["image"].astype(np.float32) - np.float32(mean)) / np.float32(std),
              "label": np.where(out["label"] == 255, ignore_index, out["label"]).astype(np.int32),
              "weights": out["weights"].astype(np.float32)}
    if "instances" in out:
        result["instances"] = out["instances"].astype(np.int32)
    return result


class OldTrainTransform:
    """`batches.TrainTransform`'s constructor, the old transform's behaviour."""

    def __init__(self, *, augment, **kwargs):
        assert augment == policy.augment_options(augment_config())  # the default config's section
        self.kwargs = kwargs

    def __call__(self, example, rng):
        return old_train_transform(example, rng, **self.kwargs)


def test_default_augment_section_is_all_off():
    default = policy.augment_options(base_config("shapes").augment)
    assert policy.augment_options(None) == default
    assert (default.cat_max_ratio, default.vflip, default.rot90, default.photometric) == (1.0, False, False, ())
    assert default.resized_crop.p == default.rotate.p == default.elastic.p == 0.0


def test_default_transform_equals_the_old_code_bit_for_bit():
    rng = np.random.default_rng(0)
    transform = batches.TrainTransform(crop_size=(20, 16), scale_range=(0.5, 2.0), hflip=True,
                                       mean=(120.0, 110.0, 100.0), std=(50.0, 60.0, 70.0), ignore_index=7)
    for seed in range(24):
        example = random_example(rng, height=int(rng.integers(8, 40)), width=int(rng.integers(8, 40)))
        example["label"][:2] = 255  # stored ignore, mapped to the run's 7
        del example["distance"]  # a key the old code did not know
        if seed % 3 == 0:
            del example["weights"]
        new = transform(example, np.random.default_rng(seed))
        old = old_train_transform(example, np.random.default_rng(seed), crop_size=(20, 16), scale_range=(0.5, 2.0),
                                  hflip=True, mean=(120.0, 110.0, 100.0), std=(50.0, 60.0, 70.0), ignore_index=7)
        assert new.keys() == old.keys()
        for key in old:
            assert new[key].dtype == old[key].dtype
            np.testing.assert_array_equal(new[key], old[key])


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    cfg = data.base_config("shapes")
    cfg.data_dir = str(tmp_path_factory.mktemp("tfds"))
    cfg.variant = "tiny"
    cfg.crop_size = (24, 24)  # tiny images are 32x32: both the crop and the padding paths run
    return data.resolve(cfg)


def flat_batches(dataset, *, seed, count, start_step=0):
    stream = data.train_batches(dataset, global_batch_size=8, seed=seed, start_step=start_step, num_local_devices=1)
    return [{k: v.reshape((-1,) + v.shape[2:]) for k, v in next(stream).items()} for _ in range(count)]


def test_default_config_batches_equal_the_old_code_path(shapes, monkeypatch):
    new = flat_batches(shapes, seed=3, count=2)
    monkeypatch.setattr(batches, "TrainTransform", OldTrainTransform)
    old = flat_batches(shapes, seed=3, count=2)
    for new_batch, old_batch in zip(new, old):
        assert new_batch.keys() == old_batch.keys()
        for key in old_batch:
            np.testing.assert_array_equal(new_batch[key], old_batch[key])


def with_augment(dataset, sections):
    cfg = dataset.config.as_configdict().copy_and_resolve_references()
    for key, value in sections.items():
        if isinstance(value, dict):
            cfg.augment[key].update(value)
        else:
            cfg.augment[key] = value
    return data.resolve(cfg)


def test_microscopy_batches_are_a_function_of_seed_and_step(shapes):
    augmented = with_augment(shapes, {**MICROSCOPY, "rotate": dict(p=0.5), "hue": dict(p=0.5)})
    first = flat_batches(augmented, seed=5, count=3)
    again = flat_batches(augmented, seed=5, count=3)
    resumed = flat_batches(augmented, seed=5, count=1, start_step=2)
    other = flat_batches(augmented, seed=6, count=1)
    plain = flat_batches(shapes, seed=5, count=1)
    for key in first[0]:
        for a, b in zip(first, again):
            np.testing.assert_array_equal(a[key], b[key])
        np.testing.assert_array_equal(resumed[0][key], first[2][key])
    assert not np.array_equal(other[0]["image"], first[0]["image"])
    assert not np.array_equal(plain[0]["image"], first[0]["image"])  # the options reach the training batches
    assert set(np.unique(first[0]["label"])) <= set(range(augmented.num_classes)) | {IGNORE}


# ---------------------------------------------------------------- geometry


def test_rot90_and_vflip_are_numpy_rot90_and_flipud_on_every_key():
    example = random_example(np.random.default_rng(1), height=6, width=9)
    for k in range(4):
        for vflip in (False, True):
            out = augment.dihedral(example, vflip=vflip, rot90=k)
            for key in augment.SPATIAL_KEYS:
                expected = np.rot90(example[key][::-1] if vflip else example[key], k)
                np.testing.assert_array_equal(out[key], expected)


def test_policy_rot90_draws_each_quarter_turn_and_half_turns_for_non_square_crops():
    example = random_example(np.random.default_rng(2), height=16, width=16)
    seen = set()
    for seed in range(40):
        out = run(example, seed, options(rot90=True))  # crop = the whole image, scale 1: only the rotation acts
        k = next(k for k in range(4) if np.array_equal(out["label"], np.rot90(example["label"], k)))
        for key in augment.SPATIAL_KEYS:
            np.testing.assert_array_equal(out[key], np.rot90(example[key], k))
        seen.add(k)
    assert seen == {0, 1, 2, 3}
    wide = random_example(np.random.default_rng(3), height=8, width=16)
    turns = {next(k for k in (0, 2) if np.array_equal(run(wide, s, options(rot90=True), crop=(8, 16))["label"],
                                                      np.rot90(wide["label"], k))) for s in range(20)}
    assert turns == {0, 2}


def test_rotation_by_zero_and_elastic_with_alpha_zero_are_the_identity():
    example = random_example(np.random.default_rng(4), height=16, width=16)
    plain = run(example, 0, options(), hflip=True)
    for opts in (options(rotate=dict(p=1.0, range=(0.0, 0.0))), options(elastic=dict(p=1.0, alpha=0.0)),
                 options(rotate=dict(p=1.0, range=(0.0, 0.0)), elastic=dict(p=1.0, alpha=0.0, grid=5))):
        out = run(example, 0, opts, hflip=True)  # the crop and flip draws come first: the same crop
        for key in augment.SPATIAL_KEYS:
            np.testing.assert_array_equal(out[key], plain[key])
    identity = warp.resample(example, warp.identity_points((16, 16)), ignore_index=IGNORE)
    for key in augment.SPATIAL_KEYS:
        np.testing.assert_array_equal(identity[key], example[key])


def test_rotation_by_90_degrees_is_np_rot90_and_turns_counter_clockwise():
    example = random_example(np.random.default_rng(5), height=10, width=10)
    for degrees, k in ((90.0, 1), (180.0, 2), (-90.0, 3)):
        points = warp.rotate_points(warp.identity_points((10, 10)), degrees=degrees, size=(10, 10))
        out = warp.resample(example, points, ignore_index=IGNORE)
        for key in augment.SPATIAL_KEYS:
            np.testing.assert_array_equal(out[key], np.rot90(example[key], k))


def test_a_constant_displacement_is_a_shift_with_padding_and_half_pixels_are_bilinear():
    example = random_example(np.random.default_rng(6), height=8, width=10)
    points = warp.elastic_points(warp.identity_points((8, 10)), np.stack([np.full((3, 3), 2.0), np.full((3, 3), -1.0)]),
                                 size=(8, 10))
    out = warp.resample(example, points, ignore_index=IGNORE)  # output (r, c) samples (r + 2, c - 1)
    for key, fill in (("image", 0), ("label", IGNORE), ("instances", 0), ("weights", 0)):
        np.testing.assert_array_equal(out[key][:6, 1:], example[key][2:, :9])
        np.testing.assert_array_equal(out[key][6:], fill)
        np.testing.assert_array_equal(out[key][:, 0], fill)
    rows, cols = warp.identity_points((8, 10))
    half = warp.resample(example, (rows, cols + 0.5), ignore_index=IGNORE)
    pixels = example["image"].astype(np.float32)
    np.testing.assert_array_equal(half["image"][:, :9], np.rint((pixels[:, :9] + pixels[:, 1:]) / 2).astype(np.uint8))
    np.testing.assert_array_equal(half["label"][:, :9], example["label"][:, 1:])  # nearest of c + 0.5 is c + 1
    np.testing.assert_array_equal(half["label"][:, 9], IGNORE)  # 9.5 rounds to column 10: outside


def test_elastic_field_passes_through_its_control_points_and_is_smooth():
    displacements = np.random.default_rng(7).normal(0, 3, (2, 3, 3))
    field = warp.elastic_field(displacements, (9, 9))  # control points at pixels 0, 4, 8
    np.testing.assert_allclose(field[:, ::4, ::4], displacements, atol=1e-9)
    # Between the control points it varies smoothly: neighbouring pixels differ by much less than alpha.
    assert np.abs(np.diff(warp.elastic_field(displacements, (64, 64)), axis=1)).max() < 1.0


def test_geometric_transforms_never_interpolate_labels_and_move_every_key_together():
    rng = np.random.default_rng(8)
    opts = options(**GEOMETRIC)
    for seed in range(16):
        example = coded_example(rng, height=int(rng.integers(20, 40)), width=int(rng.integers(20, 40)))
        out = run(example, seed, opts, crop=(24, 24), scale_range=(0.7, 1.4), hflip=True)
        label = out["label"]
        assert set(np.unique(label)) <= set(np.unique(example["label"])) | {IGNORE}
        assert set(np.unique(out["instances"])) <= set(np.unique(example["instances"])) | {0}
        assert set(np.unique(out["weights"])) <= set(np.unique(example["weights"])) | {0.0}
        real = label != IGNORE
        assert real.mean() > 0.3
        np.testing.assert_array_equal(out["instances"][real], label[real] + 1)
        np.testing.assert_array_equal(out["weights"][real], 0.5 * (label[real] + 1))
        np.testing.assert_array_equal(out["instances"][~real], 0)
        np.testing.assert_array_equal(out["weights"][~real], 0)


def test_crops_and_symmetries_keep_the_image_on_its_labels():
    # Image colour encodes the label: where the 3x3 label neighbourhood is uniform the colour must be its label's.
    rng = np.random.default_rng(9)
    opts = options(resized_crop=dict(p=0.5), vflip=True, rot90=True, cat_max_ratio=0.9)
    checked = 0
    for seed in range(16):
        example = coded_example(rng, height=int(rng.integers(20, 40)), width=int(rng.integers(20, 40)))
        out = run(example, seed, opts, crop=(24, 24), scale_range=(0.7, 1.4), hflip=True)
        label = out["label"]
        windows = np.lib.stride_tricks.sliding_window_view(np.pad(label, 1, constant_values=-1), (3, 3))
        uniform = (label != IGNORE) & (windows.min(axis=(-1, -2)) == windows.max(axis=(-1, -2)))
        np.testing.assert_allclose(out["image"][uniform], PALETTE[label[uniform]], atol=1)
        checked += uniform.sum()
    assert checked > 16 * 24 * 24 / 4


def test_warped_image_and_labels_sample_the_same_source_points():
    """The image is a ramp (red = 6 col, green = 6 row), so its bilinear value tells where each output pixel sampled
    from; the label there must be that of the source pixel nearest to it (away from rounding ties)."""
    rows, cols = np.indices((40, 40))
    label = ((rows // 4 + 2 * (cols // 4)) % 5).astype(np.int32)
    example = {"image": np.stack([6 * cols, 6 * rows, np.zeros_like(rows)], axis=-1).astype(np.uint8),
               "label": label, "instances": label + 1, "weights": (label + 1).astype(np.float32)}
    opts = options(rotate=dict(p=1.0, range=(-45.0, 45.0)), elastic=dict(p=1.0, alpha=4.0), vflip=True, rot90=True)
    checked = 0
    for seed in range(8):
        out = run(example, seed, opts, crop=(40, 40))
        source = out["image"][..., 1] / 6.0, out["image"][..., 0] / 6.0  # within 1/12 px (uint8 rounding)
        clear = (np.abs(source[0] % 1 - 0.5) > 0.15) & (np.abs(source[1] % 1 - 0.5) > 0.15) & (out["label"] != IGNORE)
        nearest = np.rint(source[0][clear]).astype(int), np.rint(source[1][clear]).astype(int)
        np.testing.assert_array_equal(out["label"][clear], label[nearest])
        checked += clear.sum()
    assert checked > 8 * 40 * 40 / 4


def test_rotation_pads_the_corners_that_come_from_outside():
    example = coded_example(np.random.default_rng(9), height=20, width=20, classes=2)
    points = warp.rotate_points(warp.identity_points((20, 20)), degrees=45.0, size=(20, 20))
    out = warp.resample(example, points, ignore_index=IGNORE)
    assert (out["label"][0, 0], out["weights"][0, 0], out["instances"][0, 0]) == (IGNORE, 0, 0)
    np.testing.assert_array_equal(out["image"][0, 0], 0)
    assert out["label"][10, 10] != IGNORE  # the centre stays
    # The square and its 45-degree turn overlap in an octagon of 2 (sqrt 2 - 1) = 82.8 % of the area.
    assert abs((out["label"] == IGNORE).mean() - (1 - 2 * (np.sqrt(2) - 1))) < 0.03


# ---------------------------------------------------------------- class-aware crops (MMSeg's cat_max_ratio)


def test_class_ratio_test_ignores_the_ignore_index_and_needs_two_classes():
    window = np.array([[0, 0, 0, 0], [0, 0, 0, 1], [255, 255, 255, 255], [255, 255, 255, 255]])
    # Labelled: 7 of class 0, 1 of class 1 -> 0.875. Counting ignore as a class would give 8 / 16 = 0.5.
    assert not augment.class_ratio_ok(window, cat_max_ratio=0.75, ignore_index=IGNORE)
    assert augment.class_ratio_ok(window, cat_max_ratio=0.9, ignore_index=IGNORE)
    assert not augment.class_ratio_ok(np.zeros((4, 4), int), cat_max_ratio=1.0, ignore_index=IGNORE)  # one class
    run_ignore = np.where(window == 255, 9, window)  # the run's ignore_index 9 (padding) is not counted either
    assert not augment.class_ratio_ok(run_ignore, cat_max_ratio=0.75, ignore_index=9)
    assert augment.class_ratio_ok(np.array([[0, 0, 1, 1]]), cat_max_ratio=0.75, ignore_index=IGNORE)
    assert not augment.class_ratio_ok(np.array([[0, 0, 0, 1]]), cat_max_ratio=0.75, ignore_index=IGNORE)  # 0.75: <


def stripes_label() -> np.ndarray:
    """64 x 64: columns 0..31 in stripes of classes 1 / 2 (4 px wide), columns 32..63 all background."""
    label = np.zeros((64, 64), np.int32)
    label[:, :32] = 1 + (np.arange(32) // 4) % 2
    return label


def largest_share(window: np.ndarray) -> float:
    values, counts = np.unique(window[window != IGNORE], return_counts=True)
    return counts.max() / counts.sum() if len(values) > 1 else 1.0


def test_cat_max_ratio_crop_satisfies_the_ratio_where_a_plain_crop_would_not():
    label = stripes_label()
    plain_fails, shares = 0, []
    for seed in range(40):
        kwargs = dict(image_size=(64, 64), crop_size=(16, 16), scale_range=(1.0, 1.0), hflip=False)
        plain = augment.sample_crop(np.random.default_rng(seed), **kwargs)
        aware = augment.sample_crop(np.random.default_rng(seed), **kwargs, label=label, cat_max_ratio=0.75)
        plain_fails += largest_share(label[plain.top:plain.top + 16, plain.left:plain.left + 16]) >= 0.75
        shares.append(largest_share(label[aware.top:aware.top + 16, aware.left:aware.left + 16]))
    assert plain_fails >= 10  # the crafted map: a plain crop is often all background
    assert max(shares) < 0.75


def test_cat_max_ratio_follows_mmseg_retry_semantics():
    """A NumPy transcription of MMSeg's RandomCrop.crop_bbox on the same random stream: the first window, then up to
    10 redraws while the test fails, the last one kept."""
    label = stripes_label()
    label[40:, 40:] = IGNORE
    for seed in range(30):
        rng = np.random.default_rng(seed)
        rng.uniform(1.0, 1.0)  # the scale draw
        corner = lambda: (int(rng.integers(0, 49)), int(rng.integers(0, 49)))  # noqa: E731
        top, left = corner()
        for _ in range(10):
            window = label[top:top + 16, left:left + 16]
            labels, counts = np.unique(window, return_counts=True)
            counts = counts[labels != IGNORE]
            if len(counts) > 1 and counts.max() / counts.sum() < 0.5:
                break
            top, left = corner()
        drawn = augment.sample_crop(np.random.default_rng(seed), image_size=(64, 64), crop_size=(16, 16),
                                    scale_range=(1.0, 1.0), hflip=False, label=label, cat_max_ratio=0.5)
        assert (drawn.top, drawn.left) == (top, left)


def test_cat_max_ratio_judges_the_rescaled_label():
    label = stripes_label()
    for seed in range(20):
        params = augment.sample_crop(np.random.default_rng(seed), image_size=(64, 64), crop_size=(16, 16),
                                     scale_range=(0.5, 2.0), hflip=True, label=label, cat_max_ratio=0.75)
        example = {"image": np.zeros((64, 64, 3), np.uint8), "label": label}
        out = augment.crop_and_flip(example, params, crop_size=(16, 16), ignore_index=IGNORE)
        assert largest_share(out["label"]) < 0.75


# ---------------------------------------------------------------- random resized crop


def test_resized_crop_windows_have_the_drawn_area_and_aspect():
    for seed in range(30):
        top, left, h, w = augment.resized_crop_window(np.random.default_rng(seed), (60, 80), area=(0.2, 0.6),
                                                      aspect=(0.5, 2.0))
        assert 0 <= top <= 60 - h and 0 <= left <= 80 - w
        assert 0.2 - 0.05 <= h * w / 4800 <= 0.6 + 0.05  # rounding of h and w
        assert 0.5 / 1.15 <= w / h <= 2.0 * 1.15


def test_resized_crop_of_the_whole_image_is_a_resize_and_impossible_draws_fall_back_to_the_centre():
    example = random_example(np.random.default_rng(10), height=20, width=20)
    params = augment.sample_resized_crop(np.random.default_rng(0), image_size=(20, 20), area=(1.0, 1.0),
                                         aspect=(1.0, 1.0), hflip=False)
    assert (params.top, params.left, params.height, params.width) == (0, 0, 20, 20)
    out = augment.resized_crop(example, params, crop_size=(10, 10))
    for key in augment.SPATIAL_KEYS:
        np.testing.assert_array_equal(out[key], augment.resize(example, (10, 10))[key])
    # A window of the whole area with aspect >= 2 does not fit a square: torchvision's central fallback.
    assert augment.resized_crop_window(np.random.default_rng(0), (20, 20), area=(1.0, 1.0),
                                       aspect=(2.0, 3.0)) == (5, 0, 10, 20)


def test_resized_crop_in_the_policy_is_class_aware():
    example = {"image": np.zeros((64, 64, 3), np.uint8), "label": stripes_label()}
    opts = options(resized_crop=dict(p=1.0, area=(0.05, 0.1), aspect=(1.0, 1.0)), cat_max_ratio=0.75)
    plain_opts = options(resized_crop=dict(p=1.0, area=(0.05, 0.1), aspect=(1.0, 1.0)))
    shares = [largest_share(run(example, seed, opts)["label"]) for seed in range(40)]
    plain = [largest_share(run(example, seed, plain_opts)["label"]) for seed in range(40)]
    assert max(shares) < 0.8  # judged before the resize to 16 x 16; nearest resizing keeps the shares close
    assert sum(s >= 0.8 for s in plain) >= 8


# ---------------------------------------------------------------- photometric


@pytest.fixture
def image():
    return np.random.default_rng(11).integers(0, 256, (9, 11, 3)).astype(np.float32)


def test_intensity_brightness_gamma_contrast_saturation_follow_their_formulas(image):
    clip = lambda x: np.clip(x, 0, 255)  # noqa: E731
    np.testing.assert_allclose(photometric.scale_intensity(image, 1.3), clip(1.3 * image), rtol=1e-6)
    np.testing.assert_allclose(photometric.shift_brightness(image, -40), clip(image - 40), rtol=1e-6)
    np.testing.assert_allclose(photometric.adjust_gamma(image, 2.0), 255 * (image / 255) ** 2, rtol=1e-5)
    np.testing.assert_allclose(photometric.adjust_gamma(np.full((1, 1, 3), 64.0), 0.5), np.full((1, 1, 3), 127.75),
                               rtol=1e-5)  # 255 * sqrt(64 / 255) = sqrt(64 * 255)
    luma = 0.299 * image[..., 0] + 0.587 * image[..., 1] + 0.114 * image[..., 2]
    np.testing.assert_allclose(photometric.adjust_contrast(image, 0.4), clip(0.4 * image + 0.6 * luma.mean()),
                               rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(photometric.adjust_saturation(image, 1.5), clip(1.5 * image - 0.5 * luma[..., None]),
                               rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(photometric.adjust_saturation(image, 0.0), np.repeat(luma[..., None], 3, -1),
                               rtol=1e-5, atol=1e-3)
    for fn, value in ((photometric.scale_intensity, 1.0), (photometric.adjust_gamma, 1.0),
                      (photometric.adjust_contrast, 1.0), (photometric.adjust_saturation, 1.0),
                      (photometric.shift_hue, 0.0), (photometric.gaussian_blur, 0.0)):
        np.testing.assert_allclose(fn(image, value), image, atol=1e-3)


def test_hue_shift_matches_colorsys(image):
    for delta in (0.1, -0.3, 0.5):
        expected = np.empty_like(image)
        for index in np.ndindex(image.shape[:2]):
            h, s, v = colorsys.rgb_to_hsv(*(image[index] / 255.0))
            expected[index] = np.array(colorsys.hsv_to_rgb((h + delta) % 1.0, s, v)) * 255
        np.testing.assert_allclose(photometric.shift_hue(image, delta), expected, atol=1e-3)


def test_gaussian_blur_is_a_separable_normalised_kernel_with_mirrored_edges(image):
    sigma = 1.2
    radius = int(4 * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    padded = np.pad(image.astype(np.float64), [(radius, radius), (radius, radius), (0, 0)], mode="symmetric")
    rows = sum(t * padded[i:i + image.shape[0]] for i, t in enumerate(taps))
    expected = sum(t * rows[:, i:i + image.shape[1]] for i, t in enumerate(taps))
    np.testing.assert_allclose(photometric.gaussian_blur(image, sigma), expected, atol=1e-3)


def test_noise_has_the_drawn_statistics_and_keeps_grey_images_grey():
    rng = np.random.default_rng(12)
    grey = np.full((128, 128, 3), 100.0, np.float32)
    noisy = photometric.gaussian_noise(grey, 6.0, rng=rng)
    assert photometric.is_grey(noisy)
    assert abs(noisy.mean() - 100) < 0.2 and abs(noisy.std() - 6.0) < 0.15
    colour = np.broadcast_to(np.float32([90, 100, 110]), (128, 128, 3))
    noise = photometric.gaussian_noise(colour, 6.0, rng=rng) - colour
    assert abs(np.corrcoef(noise[..., 0].ravel(), noise[..., 1].ravel())[0, 1]) < 0.05  # independent channels
    assert abs(noise.std() - 6.0) < 0.15
    shot = photometric.poisson_noise(grey, 51.0, rng=rng)  # counts ~ Poisson(20), each worth 5 grey levels
    assert photometric.is_grey(shot)
    assert abs(shot.mean() - 100) < 0.5 and abs(shot.var() - 100 * 255 / 51) < 25
    np.testing.assert_array_equal(np.unique(shot[..., 0]) % 5, 0)


def test_colour_transforms_leave_grey_images_grey_through_the_whole_policy():
    rng = np.random.default_rng(13)
    grey_values = rng.integers(0, 256, (32, 32, 1)).astype(np.uint8)
    example = {"image": np.repeat(grey_values, 3, axis=-1), "label": rng.integers(0, 2, (32, 32)).astype(np.int32)}
    every = {name: dict(p=1.0) for name in policy.PHOTOMETRIC}
    for seed in range(5):
        out = run(example, seed, options(**every, rotate=dict(p=1.0), elastic=dict(p=1.0)), crop=(24, 24))
        assert out["image"].dtype == np.float32 and photometric.is_grey(out["image"])
        assert out["image"].min() >= 0 and out["image"].max() <= 255
        assert set(np.unique(out["label"])) <= {0, 1, IGNORE}


def test_photometric_transforms_change_the_image_only():
    example = random_example(np.random.default_rng(14), height=16, width=16)
    every = {name: dict(p=1.0) for name in policy.PHOTOMETRIC}
    plain, out = run(example, 0, options()), run(example, 0, options(**every))
    for key in ("label", "instances", "weights"):
        np.testing.assert_array_equal(out[key], plain[key])
    assert np.abs(out["image"] - plain["image"].astype(np.float32)).mean() > 1


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize("field,value,message", [
    ("rotate.p", 1.5, r"data.augment.rotate.p must be a number in \[0, 1\], got 1.5"),
    ("gamma.range", (0.0, 2.0), r"data.augment.gamma.range must be a number in \(0, inf\], got 0.0"),
    ("hue.range", (0.2, 0.1), r"data.augment.hue.range must be \(low, high\) with low <= high"),
    ("elastic.grid", 1, r"data.augment.elastic.grid must be an integer in \[2, inf\], got 1"),
    ("cat_max_ratio", 0.0, r"data.augment.cat_max_ratio must be a number in \(0, 1\]"),
    ("vflip", 1, r"data.augment.vflip must be True or False, got 1"),
])
def test_bad_augment_values_name_their_field(field, value, message):
    cfg = augment_config()
    section, _, key = field.rpartition(".")
    with cfg.ignore_type():
        (cfg[section] if section else cfg)[key] = value
    with pytest.raises(ValueError, match=message):
        policy.augment_options(cfg)
    with pytest.raises(ValueError, match=r"data.augment has no key\(s\) mixup"):
        policy.augment_options({"mixup": 0.5})
    with pytest.raises(ValueError, match=r"data.augment.blur has no key\(s\) sigma; its keys: p, range"):
        policy.augment_options({"blur": {"p": 0.5, "sigma": 1.0}})


def test_validate_config_reports_the_augment_field(make_config):
    from seg_jax.train.validate import ConfigError, validate_config
    config = make_config("default", "tiny")
    config.data.augment.blur.p = 2.0
    with pytest.raises(ConfigError) as error:
        validate_config(config, num_devices=1, process_count=1)
    assert error.value.field == "data.augment.blur.p"


def test_a_run_saved_before_data_augment_resumes_with_the_new_defaults():
    from seg_jax.train import workdir
    new = {f"data.{k}": v for k, v in workdir.flat_config(base_config("shapes")).items()}
    old = {k: v for k, v in new.items() if not k.startswith("data.augment.")}
    assert len(new) > len(old)
    assert workdir._differences(old, new) == []
    changed = dict(new, **{"data.augment.rotate.p": 0.5})
    assert workdir._differences(old, changed) == ["data.augment.rotate.p"]


def test_benchmark_overrides_parse_literals():
    # In a subprocess: the benchmark defines absl flags (--config) that seg_jax.cli, imported by other tests of a
    # worker, defines too.
    import subprocess
    import sys
    code = ("from benchmarks import input_pipeline; print(repr(input_pipeline.parse_overrides(["
            "'data.augment.blur.p=0.5', 'data.augment.rotate.range=(-5, 5)', 'data.name=nuclei'])))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=pathlib.Path(__file__).resolve().parents[1]).stdout
    assert eval(out) == {"data.augment.blur.p": 0.5, "data.augment.rotate.range": (-5, 5), "data.name": "nuclei"}
