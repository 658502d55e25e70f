"""Data stage, pipeline side: augmentation geometry against NumPy, determinism and resume of training
batches across processes and devices, eval coverage with padding."""
from __future__ import annotations

import numpy as np
import pytest

from seg_jax import data
from seg_jax.data.pipeline import augment, batches
from seg_jax.data.sources import tfds_format

BATCH = 8  # the tiny train split has 24 examples: an epoch is 3 steps


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    cfg = data.base_config("shapes")
    cfg.data_dir = str(tmp_path_factory.mktemp("tfds"))
    cfg.variant = "tiny"
    cfg.crop_size = (16, 16)
    cfg.scale_range = (0.5, 1.5)
    return data.resolve(cfg)


def take(stream, count: int) -> list[dict[str, np.ndarray]]:
    return [next(stream) for _ in range(count)]


def flat(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """[D, b, ...] -> [D * b, ...]."""
    return {key: value.reshape((-1,) + value.shape[2:]) for key, value in batch.items()}


def random_example(rng, height=10, width=12) -> dict[str, np.ndarray]:
    return {"image": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
            "label": rng.integers(0, 5, (height, width)).astype(np.int32),
            "instances": rng.integers(0, 9, (height, width)).astype(np.int32),
            "weights": rng.uniform(0.5, 2, (height, width)).astype(np.float32),
            "distance": rng.uniform(0, 1, (height, width)).astype(np.float32),
            "id": "x"}


# ---------------------------------------------------------------- augmentation geometry


def test_crop_and_flip_at_scale_one_is_numpy_slicing():
    example = random_example(np.random.default_rng(0))
    params = augment.CropParams(scale=1.0, top=2, left=3, flip=True)
    out = augment.crop_and_flip(example, params, crop_size=(5, 6), ignore_index=255)
    for key in augment.SPATIAL_KEYS:
        np.testing.assert_array_equal(out[key], example[key][2:7, 3:9][:, ::-1])
        assert out[key].dtype == example[key].dtype
    assert out["id"] == "x"


def test_upscaling_by_two_repeats_label_pixels_and_pads_with_ignore():
    example = random_example(np.random.default_rng(1), height=4, width=5)
    params = augment.CropParams(scale=2.0, top=0, left=1, flip=False)
    out = augment.crop_and_flip(example, params, crop_size=(12, 6), ignore_index=99)
    for key, pad_value in (("label", 99), ("instances", 0), ("weights", 0.0)):
        doubled = np.repeat(np.repeat(example[key], 2, axis=0), 2, axis=1)  # [8, 10]
        np.testing.assert_array_equal(out[key][:8], doubled[:, 1:7])
        np.testing.assert_array_equal(out[key][8:], pad_value)
    np.testing.assert_array_equal(out["image"][8:], 0)


def test_eval_fit_and_pad_shrinks_then_pads():
    example = random_example(np.random.default_rng(2), height=8, width=4)
    out = augment.fit_and_pad(example, (4, 4), ignore_index=255)  # 8x4 -> 4x2, then padded to 4x4
    np.testing.assert_array_equal(out["label"][:, 2:], 255)
    np.testing.assert_array_equal(out["weights"][:, 2:], 0)
    # Nearest sampling at pixel centres of a 2x shrink picks source pixel 2i + 1.
    np.testing.assert_array_equal(out["label"][:, :2], example["label"][1::2, 1::2])
    same = augment.fit_and_pad(example, (8, 6), ignore_index=255)  # fits already: pad only
    np.testing.assert_array_equal(same["label"][:, :4], example["label"])
    np.testing.assert_array_equal(same["label"][:, 4:], 255)


def test_augmentation_keeps_image_label_and_weights_aligned():
    # Image colour encodes the label: after any scale/crop/flip, every pixel whose 3x3 label
    # neighbourhood is uniform must still show its label's colour.
    rng = np.random.default_rng(3)
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], np.uint8)
    label = np.kron(rng.integers(0, 5, (5, 6)), np.ones((6, 6), np.int64)).astype(np.int32)  # 30x36 blocks
    example = {"image": palette[label], "label": label, "weights": (label + 1).astype(np.float32)}
    transform = batches.TrainTransform(crop_size=(24, 24), scale_range=(0.5, 2.0), hflip=True, mean=(0.0,) * 3,
                                        std=(1.0,) * 3, ignore_index=255)
    checked = 0
    for seed in range(12):
        out = transform(example, np.random.default_rng(seed))
        real = out["label"] != 255
        np.testing.assert_array_equal(out["weights"][~real], 0)
        np.testing.assert_array_equal(out["weights"][real], out["label"][real] + 1)
        padded = np.pad(out["label"], 1, constant_values=-1)  # crop borders: neighbours unknown
        windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3))
        uniform = real & (windows.min(axis=(-1, -2)) == windows.max(axis=(-1, -2)))
        np.testing.assert_allclose(out["image"][uniform], palette[out["label"][uniform]], atol=1)
        checked += uniform.sum()
    assert checked > 12 * 24 * 24 / 4  # enough interior pixels were compared


# ---------------------------------------------------------------- training batches


def test_batches_have_the_documented_layout(ds):
    batch = next(data.train_batches(ds, global_batch_size=BATCH, seed=0, num_local_devices=2))
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
        "image": ((2, 4, 16, 16, 3), np.float32), "label": ((2, 4, 16, 16), np.int32),
        "weights": ((2, 4, 16, 16), np.float32), "instances": ((2, 4, 16, 16), np.int32)}
    with pytest.raises(ValueError, match="process_count \\* num_local_devices = 3 \\* 1 = 3"):
        data.train_batches(ds, global_batch_size=BATCH, seed=0, num_local_devices=1, process_count=3)


def test_resume_processes_and_devices_reproduce_the_same_global_batches(ds):
    steps = 5  # crosses an epoch boundary
    reference = [flat(b) for b in take(data.train_batches(ds, global_batch_size=BATCH, seed=7,
                                                          num_local_devices=1), steps)]
    resumed = take(data.train_batches(ds, global_batch_size=BATCH, seed=7, start_step=3, num_local_devices=1), 2)
    two_devices = take(data.train_batches(ds, global_batch_size=BATCH, seed=7, num_local_devices=2), steps)
    per_process = [take(data.train_batches(ds, global_batch_size=BATCH, seed=7, start_step=1, num_local_devices=2,
                                           process_index=p, process_count=2), 2) for p in range(2)]
    other_seed = flat(next(data.train_batches(ds, global_batch_size=BATCH, seed=8, num_local_devices=1)))
    for key in reference[0]:
        for step in range(2):
            np.testing.assert_array_equal(flat(resumed[step])[key], reference[3 + step][key])
            rows = np.concatenate([flat(per_process[p][step])[key] for p in range(2)])
            np.testing.assert_array_equal(rows, reference[1 + step][key])
        for step in range(steps):
            np.testing.assert_array_equal(flat(two_devices[step])[key], reference[step][key])
    assert per_process[0][0]["image"].shape[:2] == (2, 2)
    assert not np.array_equal(other_seed["image"], reference[0]["image"])


def _resolved(ds, **fields):
    cfg = ds.config.as_configdict().copy_and_resolve_references()
    cfg.update(fields)
    return data.resolve(cfg)


def test_a_split_that_fits_is_decoded_once_and_gives_the_same_batches(ds, monkeypatch):
    # Tiny train split: 24 examples of 4 KiB. No reader threads, so that reads are counted exactly.
    cached, uncached = _resolved(ds, cache_mb=1, prefetch=0), _resolved(ds, cache_mb=0, prefetch=0)
    decoded = {"cached": 0, "uncached": 0}
    for name, d in (("cached", cached), ("uncached", uncached)):
        source = d.source("train")
        decode = source._to_canonical

        def counted(record, name=name, decode=decode):
            decoded[name] += 1
            return decode(record)
        monkeypatch.setattr(source, "_to_canonical", counted)
    streams = [take(data.train_batches(d, global_batch_size=BATCH, seed=3, num_local_devices=1), 7) for d in
               (cached, uncached)]  # 7 steps: 56 reads, over two epochs
    assert cached.source("train").caching and not uncached.source("train").caching
    for a, b in zip(*streams):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert decoded == {"cached": 24, "uncached": 56}  # each example once; the other split at every read
    example = cached.source("train")[0]
    assert example is not cached.source("train")[0]  # a fresh mapping each read ...
    with pytest.raises(ValueError, match="read-only"):  # ... of arrays no transform can change for later epochs
        example["image"][0, 0] = 0
    budget = tfds_format.example_bytes(example) * 24 / 2**20
    too_small = _resolved(ds, cache_mb=int(budget))  # the split needs just over this budget (4.0 KiB per example)
    too_small.source("train")[0]
    assert budget > int(budget) and not too_small.source("train").caching


def test_every_epoch_is_a_fresh_permutation(ds):
    plain = ds.config.as_configdict().copy_and_resolve_references()
    plain.crop_size, plain.scale_range, plain.hflip = (32, 32), (1.0, 1.0), False  # no augmentation
    plain = data.resolve(plain)
    source = plain.source("train")
    originals = np.stack([source[i]["image"] for i in range(len(source))]).astype(np.float32)
    batches = take(data.train_batches(plain, global_batch_size=BATCH, seed=0, num_local_devices=1), 6)
    images = data.denormalize(np.concatenate([flat(b)["image"] for b in batches]), plain.config).astype(np.float32)
    # Identify each batch image with its stored example.
    order = [int(np.argmin(np.abs(originals - image).sum(axis=(1, 2, 3)))) for image in images]
    for image, index in zip(images, order):
        np.testing.assert_array_equal(image, originals[index])
    epochs = [order[:24], order[24:]]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(24))
    assert epochs[0] != epochs[1] and epochs[0] != list(range(24))


# ---------------------------------------------------------------- eval batches


def test_eval_visits_every_example_once_with_padding_masked(ds):
    # 8 validation examples, global batch 6 over 2 processes x 1 device: 2 batches, 4 padded rows.
    runs = [list(data.eval_batches(ds, split="validation", global_batch_size=6, num_local_devices=1,
                                   process_index=p, process_count=2)) for p in range(2)]
    assert [len(run) for run in runs] == [2, 2]
    source = ds.source("validation")
    seen = []
    for run in runs:
        for batch in run:
            assert batch["image"].shape == (1, 3, 32, 32, 3) and batch["mask"].shape == (1, 3)
            for row in range(3):
                index, mask = int(batch["index"][0, row]), batch["mask"][0, row]
                if mask:
                    seen.append(index)
                    np.testing.assert_array_equal(batch["label"][0, row], source[index]["label"])
                    np.testing.assert_array_equal(data.denormalize(batch["image"][0, row], ds.config),
                                                  source[index]["image"])
                else:
                    assert index == -1
                    np.testing.assert_array_equal(batch["label"][0, row], 255)
                    np.testing.assert_array_equal(batch["weights"][0, row], 0)
    assert sorted(seen) == list(range(8))
    assert sum(float(b["mask"].sum()) for run in runs for b in run) == 8


def test_denormalize_inverts_normalisation(ds):
    cfg = ds.config
    image = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=-1)
    normalised = augment.normalize(image, mean=cfg.mean, std=cfg.std)
    np.testing.assert_allclose(normalised[3, 4], (np.float32(52) - np.array(cfg.mean)) / np.array(cfg.std), rtol=1e-6)
    np.testing.assert_array_equal(data.denormalize(normalised, cfg), image)
