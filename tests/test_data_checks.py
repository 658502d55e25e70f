"""Data stage, checks: `check_dataset` finds each defect of a folder dataset (or of hand-made examples) with
one message naming split, example index and id; a good dataset's report holds the NumPy-counted class
frequencies; training and evaluation stop on a bad example with the very same message; detection targets
are a map step of the training pipeline."""
from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

from seg_jax import data
from seg_jax.data.sources import folder_importer

NAMES = ("sky", "tree", "road")


def write_scenes(root, count: int = 6) -> dict[str, dict[str, np.ndarray]]:
    """Scenes of 12x16 (even) and 10x14 (odd) pixels: 1-2 squares of class 1 or 2, each its own instance,
    on background, a few ignored pixels; images random. Returns the arrays by stem."""
    rng = np.random.default_rng(0)
    for directory in ("images", "labels", "instances"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    written = {}
    for number in range(count):
        height, width = (12, 16) if number % 2 == 0 else (10, 14)
        label = np.zeros((height, width), np.uint8)
        instances = np.zeros((height, width), np.uint16)
        for k in range(1, 3 if number % 3 else 2):
            top, left = 5 * (k - 1), 7 * (k - 1)
            label[top:top + 4, left:left + 5], instances[top:top + 4, left:left + 5] = rng.integers(1, 3), 300 * k
        label[-1, :3] = 255
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        stem = f"scene{number:03d}"
        for directory, array in (("images", image), ("labels", label), ("instances", instances)):
            Image.fromarray(array).save(root / directory / f"{stem}.png")
        written[stem] = {"image": image, "label": label, "instances": instances}
    return written


def resolve_folder(root, **folder) -> data.Dataset:
    cfg = data.base_config("folder")
    cfg.data_dir = str(root / "tfds")
    cfg.crop_size, cfg.eval_size = (8, 8), (12, 16)
    cfg.folder.update(images=str(root / "images"), labels=str(root / "labels"), instances=str(root / "instances"),
                      num_classes=3, class_names=NAMES, val_fraction=1 / 3, **folder)
    return data.resolve(cfg)


def validation_stems(root) -> set[str]:
    pairs = folder_importer.pair_files(str(root / "images"), str(root / "labels"))
    return {p.stem for p in folder_importer.split_pairs(pairs, val_fraction=1 / 3, seed=0)["validation"]}


def where(ds, split: str, stem: str) -> str:
    source = ds.source(split)
    index = [source[i]["id"] for i in range(len(source))].index(stem)
    return f"dataset 'folder' split {split!r} example {index} (id {stem!r})"


def check_error(ds, splits=("train", "validation")) -> str:
    with pytest.raises(data.DataError) as error:
        data.check_dataset(ds, splits=splits)
    return str(error.value)


# ---------------------------------------------------------------- a good dataset


def test_report_of_a_good_dataset_has_numpy_frequencies(tmp_path):
    written = write_scenes(tmp_path)
    ds = resolve_folder(tmp_path)
    report = data.check_dataset(ds, splits=("train", "validation"))
    held_out = validation_stems(tmp_path)
    assert [(r.split, r.num_examples) for r in report.splits] == [("train", 4), ("validation", 2)]
    for split_report, stems in zip(report.splits, ([s for s in written if s not in held_out], sorted(held_out))):
        labels = np.concatenate([written[stem]["label"].ravel() for stem in stems])
        counts = np.bincount(labels[labels != 255], minlength=3)
        np.testing.assert_array_equal(split_report.class_pixel_counts, counts)
        np.testing.assert_allclose(split_report.class_frequencies, counts / counts.sum())
        assert split_report.ignored_pixels == 3 * len(stems)
        sizes = [written[stem]["label"].shape for stem in stems]
        assert split_report.min_size == tuple(np.min(sizes, axis=0))
        assert split_report.max_size == tuple(np.max(sizes, axis=0))
    text = report.text()
    train_counts = report.splits[0].class_pixel_counts
    assert "train: 4 examples, heights 10-12, widths 14-16 pixels" in text
    assert ", ".join(f"{n} {100 * c / train_counts.sum():.2f}%" for n, c in zip(NAMES, train_counts)) in text
    assert len(text.splitlines()) == 3


def test_report_of_a_built_in_dataset_names_the_single_size(tmp_path):
    cfg = data.base_config("shapes")
    cfg.data_dir, cfg.variant = str(tmp_path), "tiny"
    ds = data.resolve(cfg)
    report = data.check_dataset(ds, splits=("train", "validation", "test"))
    np.testing.assert_array_equal(report.splits[0].class_pixel_counts, ds.class_pixel_counts())
    assert "train: 24 examples, 32x32 pixels; labelled pixels: background " in report.text()


# ---------------------------------------------------------------- defects of a folder dataset


def test_all_ignore_label(tmp_path):
    write_scenes(tmp_path)
    Image.fromarray(np.full((10, 14), 255, np.uint8)).save(tmp_path / "labels" / "scene003.png")
    Image.fromarray(np.zeros((10, 14), np.uint16)).save(tmp_path / "instances" / "scene003.png")
    ds = resolve_folder(tmp_path)
    split = "validation" if "scene003" in validation_stems(tmp_path) else "train"
    assert check_error(ds) == (f"{where(ds, split, 'scene003')}: every label pixel is the ignore value 255, so "
                               "the example counts nowhere; check its label map or leave it out")


def test_instance_without_class(tmp_path):
    written = write_scenes(tmp_path)
    instances = written["scene002"]["instances"].copy()
    instances[-2:, -2:] = 7  # on background pixels only
    Image.fromarray(instances).save(tmp_path / "instances" / "scene002.png")
    ds = resolve_folder(tmp_path)
    split = "validation" if "scene002" in validation_stems(tmp_path) else "train"
    assert check_error(ds) == (f"{where(ds, split, 'scene002')}: instance id(s) [7] have no class: every label "
                               "pixel under them is background (0) or ignore (255)")


def scan_order(ds, splits=("train", "validation")) -> list[tuple[str, int, str]]:
    """(split, index, id) of every example in the order check_dataset reads them."""
    return [(split, i, ds.source(split)[i]["id"]) for split in splits for i in range(len(ds.source(split)))]


@pytest.mark.parametrize("copy", ["scene000_copy", "scene001_copy"])  # sorted 2nd, 3rd of 7: train, validation
def test_duplicated_examples_name_both(tmp_path, copy):
    write_scenes(tmp_path)
    for directory in ("images", "labels", "instances"):
        shutil.copy(tmp_path / directory / "scene000.png", tmp_path / directory / f"{copy}.png")
    ds = resolve_folder(tmp_path)
    (first, second) = [item for item in scan_order(ds) if item[2] in ("scene000", copy)]
    assert check_error(ds) == (
        f"dataset 'folder' split {second[0]!r} example {second[1]} (id {second[2]!r}): image and label identical "
        f"to those of split {first[0]!r} example {first[1]} (id {first[2]!r}) (a duplicated example; across "
        "splits it leaks evaluation data into training)")
    if first[0] != second[0]:  # train/validation leakage: each split alone is clean
        data.check_dataset(ds, splits=("train",))
        data.check_dataset(ds, splits=("validation",))
    splits = {first[0], second[0]}
    assert splits == ({"train"} if copy == "scene000_copy" else {"train", "validation"})  # both cases are tested


# ---------------------------------------------------------------- defects the importer refuses: hand-made examples


def hand_made(**changes) -> list[dict]:
    examples = []
    for number in range(4):
        label = np.zeros((8, 8), np.int32)
        label[2:5, 2:5] = 1 + number % 2
        instances = np.where(label > 0, number + 1, 0).astype(np.int32)
        examples.append({"image": np.full((8, 8, 3), 10 * number, np.uint8), "label": label,
                         "instances": instances, "id": f"scene{number:03d}"})
    examples[3].update(changes)
    return examples


@pytest.mark.parametrize("changes,problem", [
    ({"label": np.full((8, 8), 7, np.int32)},
     "label value(s) [7] outside [0, 3) and not the ignore label 255; check the dataset's labels or its "
     "number of classes"),
    ({"label": np.zeros((5, 5), np.int32)}, "image is 8x8 pixels but label is 5x5"),
    ({"instances": np.zeros((8, 9), np.int32)}, "image is 8x8 pixels but instances is 8x9"),
])
def test_training_and_evaluation_stop_with_the_message_of_the_scan(tmp_path, monkeypatch, changes, problem):
    write_scenes(tmp_path)
    ds = resolve_folder(tmp_path)
    examples = hand_made(**changes)
    monkeypatch.setattr(ds, "source", lambda split: examples)
    expected = f"dataset 'folder' split 'train' example 3 (id 'scene003'): {problem}"
    assert check_error(ds, splits=("train",)) == expected
    with pytest.raises(data.DataError) as error:  # the first batch reads all 4 examples
        next(data.train_batches(ds, global_batch_size=4, seed=0, num_local_devices=1))
    assert str(error.value) == expected
    with pytest.raises(data.DataError) as error:
        list(data.eval_batches(ds, split="train", global_batch_size=4, num_local_devices=1))
    assert str(error.value) == expected
    assert isinstance(error.value, ValueError)


def test_training_on_a_folder_with_an_all_ignore_label_raises_the_scan_message(tmp_path):
    write_scenes(tmp_path)
    held_out = validation_stems(tmp_path)
    stem = next(s for s in (f"scene{n:03d}" for n in range(6)) if s not in held_out)
    shape = np.asarray(Image.open(tmp_path / "labels" / f"{stem}.png")).shape
    Image.fromarray(np.full(shape, 255, np.uint8)).save(tmp_path / "labels" / f"{stem}.png")
    Image.fromarray(np.zeros(shape, np.uint16)).save(tmp_path / "instances" / f"{stem}.png")
    ds = resolve_folder(tmp_path)
    expected = check_error(ds, splits=("train",))
    assert expected.startswith(where(ds, "train", stem) + ": every label pixel")
    with pytest.raises(data.DataError) as error:
        next(data.train_batches(ds, global_batch_size=4, seed=0, num_local_devices=1))
    assert str(error.value) == expected


# ---------------------------------------------------------------- detection targets as a map step


def test_detection_targets_are_a_map_step_of_training(tmp_path):
    cfg = data.base_config("shapes")
    cfg.data_dir, cfg.variant, cfg.crop_size, cfg.ignore_index = str(tmp_path), "tiny", (24, 24), 9
    ds = data.resolve(cfg)
    step = data.DetectionTargets(max_instances=5, ignore_index=ds.ignore_index)
    assert pickle.loads(pickle.dumps(step)) == step
    plain = data.train_batches(ds, global_batch_size=4, seed=1, num_local_devices=2)
    mapped = data.train_batches(ds, global_batch_size=4, seed=1, num_local_devices=2, example_map=step)
    for _ in range(2):
        batch, with_targets = next(plain), next(mapped)
        expected = data.batched_instances_to_targets(batch["instances"], batch["label"], max_instances=5,
                                                     ignore_index=9)
        assert sorted(with_targets) == sorted([*batch, *expected])
        for key, value in {**batch, **expected}.items():
            np.testing.assert_array_equal(with_targets[key], value)
        assert with_targets["masks"].shape == (2, 2, 5, 24, 24) and with_targets["masks"].dtype == np.uint8
        assert with_targets["boxes"].dtype == np.float32 and with_targets["valid"].dtype == bool
        assert with_targets["valid"].any()
    with pytest.raises(KeyError, match="DetectionTargets needs instance ids"):
        step({"image": np.zeros((4, 4, 3)), "label": np.zeros((4, 4), np.int32)})
