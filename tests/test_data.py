"""Data stage, datasets side: procedural generators, TFDS round trips, folder import, public-dataset
mappings and class balance. Everything runs on `tiny` variants in temporary data dirs."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage.filters import threshold_otsu

from seg_jax import data
from seg_jax.data import folder
from seg_jax.data.sources import folder_importer, nuclei, public, shapes


def tiny_config(name: str, data_dir) -> object:
    cfg = data.base_config(name)
    cfg.data_dir = str(data_dir)
    cfg.variant = "tiny"
    return cfg


@pytest.fixture(scope="module")
def shapes_ds(tmp_path_factory):
    return data.resolve(tiny_config("shapes", tmp_path_factory.mktemp("tfds")))


def examples_by_id(ds, split: str) -> dict[str, dict]:
    source = ds.source(split)
    return {example["id"]: example for example in (source[i] for i in range(len(source)))}


# ---------------------------------------------------------------- registry and config


def test_unknown_names_list_the_valid_ones(shapes_ds):
    with pytest.raises(KeyError, match="unknown dataset 'shapez'.*cityscapes.*folder.*nuclei.*oxford_iiit_pet.*shapes"):
        data.base_config("shapez")
    cfg = shapes_ds.config.as_configdict().copy_and_resolve_references()
    cfg.variant = "huge"
    with pytest.raises(KeyError, match="'huge'.*default, tiny"):
        data.resolve(cfg)
    with pytest.raises(KeyError, match="'training'.*test, train, validation"):
        shapes_ds.source("training")


def test_the_config_table_names_every_registered_dataset():
    from seg_jax.data import config
    assert sorted(config.DATASET_DEFAULTS) == data.DATASETS.names()


def test_base_config_defaults_per_dataset(monkeypatch):
    monkeypatch.setenv("SEG_JAX_DATA_DIR", "/somewhere/tfds")
    assert data.base_config("shapes").data_dir == "/somewhere/tfds"
    assert data.base_config("shapes").eval_size is None
    pets = data.base_config("oxford_iiit_pet")
    assert (pets.eval_split, tuple(pets.eval_size)) == ("test", (512, 512))
    assert data.base_config("cityscapes").ignore_index == 255


# ---------------------------------------------------------------- procedural datasets


def test_resolve_describes_the_tiny_variant(shapes_ds):
    assert (shapes_ds.name, shapes_ds.num_classes, shapes_ds.class_names, shapes_ds.ignore_index,
            shapes_ds.split_sizes, shapes_ds.has_instances) == (
        "shapes", 6, shapes.CLASS_NAMES, 255, {"train": 24, "validation": 8, "test": 8}, True)
    assert shapes_ds.config.variant == "tiny"
    with pytest.raises(AttributeError):  # frozen: what is cached from it stays true
        shapes_ds.config.variant = "default"


def test_stored_examples_equal_the_renderer_output(shapes_ds):
    # The TFDS round trip is lossless and example k of a split comes from rng (seed, split, k).
    stored = examples_by_id(shapes_ds, "validation")["validation_00003"]
    image, label, instances = shapes.render_shapes(np.random.default_rng([1, 1, 3]), 32)
    np.testing.assert_array_equal(stored["image"], image)
    np.testing.assert_array_equal(stored["label"], label.astype(np.int32))
    np.testing.assert_array_equal(stored["instances"], instances.astype(np.int32))
    assert stored["label"].dtype == np.int32 and stored["instances"].dtype == np.int32


def test_our_builders_use_tfds_own_code_path_and_expect_no_checksums():
    """TFDS finds a builder's download checksums beside its code (`code_path`, through importlib_resources); ours
    download nothing, so it finds none — no override of TFDS internals needed (tfds 4.9.10)."""
    builder = shapes.ShapesBuilder
    assert builder.code_path.name == "shapes.py" and builder.url_infos is None


def test_same_seed_gives_identical_dataset(shapes_ds, tmp_path):
    again = data.resolve(tiny_config("shapes", tmp_path))
    first, second = examples_by_id(shapes_ds, "train"), examples_by_id(again, "train")
    assert sorted(first) == sorted(second) == [f"train_{i:05d}" for i in range(24)]
    for key in first:
        for field in ("image", "label", "instances"):
            np.testing.assert_array_equal(first[key][field], second[key][field])
    # ... and different examples really differ.
    assert not np.array_equal(first["train_00000"]["image"], first["train_00001"]["image"])


def test_shapes_labels_are_strongly_imbalanced():
    counts = np.zeros(6, np.int64)
    for number in range(120):
        _, label, instances = shapes.render_shapes(np.random.default_rng([7, number]), 64)
        counts += np.bincount(label.ravel(), minlength=6)
        # Every object pixel belongs to an instance of a single class.
        np.testing.assert_array_equal(instances > 0, label > 0)
        for instance_id in np.unique(instances[instances > 0]):
            assert len(np.unique(label[instances == instance_id])) == 1
    frequency = counts / counts.sum()
    assert frequency[0] > 0.5
    assert frequency.min() < 0.01 and (counts > 0).all()
    assert frequency[1] > 10 * frequency[5]  # discs vs thin bars


def test_nuclei_touch_so_connected_components_merge_them():
    instance_count = component_count = threshold_count = 0
    for number in range(20):
        image, label, instances = nuclei.render_nuclei(np.random.default_rng([3, number]), 64)
        np.testing.assert_array_equal(label, instances > 0)
        assert instances.max() == len(np.unique(instances)) - 1  # numbered 1..K
        instance_count += instances.max()
        component_count += ndimage.label(label)[1]
        grey = image.mean(axis=-1)
        threshold_count += ndimage.label(grey > threshold_otsu(grey))[1]
    assert component_count < 0.8 * instance_count
    assert threshold_count < 0.8 * instance_count


# ---------------------------------------------------------------- folder datasets


def write_folder(root, sizes=((12, 16), (12, 16), (10, 9), (12, 16))) -> dict[str, dict[str, np.ndarray]]:
    """Writes images/, labels/ and instances/ with a few PNGs; returns the arrays by stem."""
    rng = np.random.default_rng(0)
    written = {}
    for directory in ("images", "labels", "instances"):
        os.makedirs(root / directory, exist_ok=True)
    for number, (height, width) in enumerate(sizes):
        stem = f"img{number}"
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        label = rng.choice(np.array([0, 1, 2, 255], np.uint8), (height, width))
        # 16-bit ids, each on labelled (class 1 or 2) pixels only: `instances_without_class` finds none.
        instances = np.where(np.isin(label, [1, 2]), rng.integers(0, 1000, (height, width)), 0).astype(np.uint16)
        Image.fromarray(image).save(root / "images" / f"{stem}.png")
        Image.fromarray(label).save(root / "labels" / f"{stem}.png")
        Image.fromarray(instances).save(root / "instances" / f"{stem}.png")  # mode I;16
        written[stem] = {"image": image, "label": label, "instances": instances}
    return written


def test_folder_round_trip_through_the_cli(tmp_path, capsys):
    written = write_folder(tmp_path)
    out = tmp_path / "tfds"
    status = folder.main(["--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"),
                          "--instances", str(tmp_path / "instances"), "--num_classes", "3", "--out", str(out),
                          "--class_names", "sky", "tree", "road", "--val_fraction", "0.25"])
    assert status == 0 and "train: 3" in capsys.readouterr().out
    cfg = data.base_config("folder")
    cfg.data_dir = str(out)
    ds = data.resolve(cfg)
    assert (ds.class_names, ds.split_sizes, ds.has_instances) == (
        ("sky", "tree", "road"), {"train": 3, "validation": 1}, True)
    stored = {**examples_by_id(ds, "train"), **examples_by_id(ds, "validation")}
    assert sorted(stored) == sorted(written)
    for stem, arrays in written.items():
        for field, expected in arrays.items():
            np.testing.assert_array_equal(stored[stem][field], expected)
    # Eval at native size needs one size; eval_size pads every image to it.
    with pytest.raises(ValueError, match="eval_size"):
        list(data.eval_batches(ds, split="train+validation", global_batch_size=4, num_local_devices=1))
    cfg.eval_size = (12, 16)
    ds = data.resolve(cfg)
    (batch,) = data.eval_batches(ds, split="train+validation", global_batch_size=4, num_local_devices=1)
    assert batch["label"].shape == (1, 4, 12, 16)
    source = ds.source("train+validation")
    order = [source[i]["id"] for i in range(len(source))]
    small = batch["index"][0].tolist().index(order.index("img2"))  # the 10x9 image, padded
    np.testing.assert_array_equal(batch["label"][0, small, 10:], 255)
    np.testing.assert_array_equal(batch["label"][0, small, :10, :9], written["img2"]["label"])


def test_folder_conversion_from_config_on_first_use(tmp_path):
    written = write_folder(tmp_path, sizes=((8, 8),) * 3)
    cfg = data.base_config("folder")
    cfg.data_dir = str(tmp_path / "tfds")
    with pytest.raises(FileNotFoundError, match="python -m seg_jax.data.folder"):
        data.resolve(cfg)
    cfg.folder.images, cfg.folder.labels, cfg.folder.num_classes = str(tmp_path / "images"), str(tmp_path / "labels"), 3
    ds = data.resolve(cfg)
    assert ds.class_names == ("class_0", "class_1", "class_2") and not ds.has_instances
    assert sum(ds.split_sizes.values()) == len(written)


def _missing_label(root):
    os.remove(root / "labels" / "img1.png")
    return "img1.png"


def _orphan_label(root):
    Image.fromarray(np.zeros((12, 16), np.uint8)).save(root / "labels" / "stray.png")
    return "stray.png"


def _size_mismatch(root):
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "labels" / "img2.png")
    return "img2.png"


def _label_out_of_range(root):
    Image.fromarray(np.full((12, 16), 7, np.uint8)).save(root / "labels" / "img3.png")
    return "img3.png"


def _corrupt_image(root):
    (root / "images" / "img0.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return "img0.png"


def _rgb_label(root):
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(root / "labels" / "img1.png")
    return "img1.png"


@pytest.mark.parametrize("break_it", [_missing_label, _orphan_label, _size_mismatch, _label_out_of_range,
                                      _corrupt_image, _rgb_label])
def test_folder_errors_name_the_file(tmp_path, break_it):
    write_folder(tmp_path)
    culprit = break_it(tmp_path)
    with pytest.raises(folder_importer.FolderDatasetError, match=culprit):
        folder_importer.convert_folder(images=str(tmp_path / "images"), labels=str(tmp_path / "labels"),
                                      num_classes=3, out=str(tmp_path / "tfds"))
    assert not os.path.exists(folder_importer.dataset_dir(str(tmp_path / "tfds")))  # nothing half-written kept


def test_folder_cli_reports_errors_without_traceback(tmp_path, capsys):
    write_folder(tmp_path)
    culprit = _label_out_of_range(tmp_path)
    status = folder.main(["--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"),
                          "--num_classes", "3", "--out", str(tmp_path / "tfds")])
    assert status == 2 and culprit in capsys.readouterr().err


# ---------------------------------------------------------------- public datasets (offline)


def test_pet_trimap_mapping():
    trimap = np.array([[1, 2, 3], [2, 1, 0]], np.uint8)[..., None]
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    example = public.pet_to_canonical({"image": image, "segmentation_mask": trimap, "file_name": b"Abyssinian_1.jpg",
                                       "label": 0, "species": 0})
    np.testing.assert_array_equal(example["label"], [[1, 0, 255], [0, 1, 255]])
    np.testing.assert_array_equal(example["image"], image)
    assert example["id"] == "Abyssinian_1.jpg" and example["label"].dtype == np.int32


# Cityscapes label id -> train id, from the official `labels.py` of cityscapesScripts.
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                        26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def test_cityscapes_label_mapping():
    label_ids = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
    example = public.cityscapes_to_canonical({"image_left": np.zeros((16, 16, 3), np.uint8),
                                              "segmentation_label": label_ids, "image_id": b"aachen_000000_000019"})
    expected = np.array([CITYSCAPES_TRAIN_IDS.get(i, 255) for i in range(256)]).reshape(16, 16)
    np.testing.assert_array_equal(example["label"], expected)
    assert example["id"] == "aachen_000000_000019"
    assert len(public.CITYSCAPES_CLASS_NAMES) == 19 and public.CITYSCAPES_CLASS_NAMES[13] == "car"


def test_cityscapes_without_manual_files_says_what_is_missing(tmp_path):
    cfg = data.base_config("cityscapes")
    cfg.data_dir, cfg.cityscapes_manual_dir = str(tmp_path / "tfds"), str(tmp_path)
    with pytest.raises(RuntimeError, match="leftImg8bit_trainvaltest.zip, gtFine_trainvaltest.zip"):
        data.resolve(cfg)


# ---------------------------------------------------------------- class balance


def numpy_label_statistics(source, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel counts per class, and labelled pixels of the images where each class is present, by NumPy."""
    counts, present_pixels = np.zeros(num_classes, np.int64), np.zeros(num_classes, np.int64)
    for index in range(len(source)):
        image_counts = np.bincount(source[index]["label"].ravel(), minlength=256)[:num_classes]
        counts += image_counts
        present_pixels += np.where(image_counts > 0, image_counts.sum(), 0)
    return counts, present_pixels


def test_class_pixel_counts_match_numpy_and_are_cached(shapes_ds):
    expected = np.zeros(6, np.int64)
    source = shapes_ds.source("train")
    for index in range(len(source)):
        for value in source[index]["label"].ravel():
            expected[value] += 1
    counts = shapes_ds.class_pixel_counts()  # the config's train split
    np.testing.assert_array_equal(counts, expected)
    assert counts.dtype == np.int64
    counts[0] = -1  # callers get a copy: the cache stays right
    np.testing.assert_array_equal(shapes_ds.class_pixel_counts(split="train"), expected)
    stats = shapes_ds.label_statistics()  # counted in the same pass, cached beside the counts
    np.testing.assert_array_equal(stats.pixel_counts, expected)
    np.testing.assert_array_equal(stats.present_image_pixels, numpy_label_statistics(source, 6)[1])
    # A new resolution reads the JSON cache beside the TFDS files (tampered here to prove it).
    path = os.path.join(shapes_ds.directory, "label_statistics.train.json")
    with open(path) as f:
        cached = json.load(f)
    assert cached["format"] == 2
    cached["pixel_counts"][0] += 1
    with open(path, "w") as f:
        json.dump(cached, f)
    again = data.resolve(shapes_ds.config)
    np.testing.assert_array_equal(again.class_pixel_counts(), expected + [1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(shapes_ds.class_pixel_counts(), expected)  # in memory
    np.testing.assert_allclose(again.class_weights("median_global_frequency"), data.class_weights_from_counts(
        expected + [1, 0, 0, 0, 0, 0], method="median_global_frequency"))
    # A cache of another format (as an older seg_jax wrote it) is recounted, not misread.
    cached["format"] = 1
    with open(path, "w") as f:
        json.dump(cached, f)
    np.testing.assert_array_equal(data.resolve(shapes_ds.config).class_pixel_counts(), expected)


def test_class_weights_hand_worked():
    counts = [6, 3, 1, 0]  # frequencies 0.6, 0.3, 0.1 over K = 3 present classes
    inverse = data.class_weights_from_counts(counts, method="inverse_frequency")
    np.testing.assert_allclose(inverse, [1 / 1.8, 1 / 0.9, 1 / 0.3, 0.0], rtol=1e-6)
    assert inverse.dtype == np.float32
    np.testing.assert_allclose(np.dot([0.6, 0.3, 0.1, 0.0], inverse), 1.0, rtol=1e-6)
    median = data.class_weights_from_counts(counts, method="median_global_frequency")
    np.testing.assert_allclose(median, [0.5, 1.0, 3.0, 0.0], rtol=1e-6)
    with pytest.raises(ValueError, match="inverse_frequency, median_frequency, median_global_frequency"):
        data.class_weights_from_counts(counts, method="log")
    with pytest.raises(ValueError, match="positive total"):
        data.class_weights_from_counts([0, 0], method="inverse_frequency")
    with pytest.raises(ValueError, match="needs present_image_pixels"):
        data.class_weights_from_counts(counts, method="median_frequency")


def test_median_frequency_is_eigen_and_fergus_on_hand_worked_label_maps():
    from seg_jax.data.derived import statistics
    maps = [np.array([[0, 0], [0, 1]]),     # 4 labelled pixels: class 0 x3, class 1 x1
            np.array([[0, 2], [255, 2]]),   # 3 labelled pixels (one ignored): class 0 x1, class 2 x2
            np.array([[1, 1], [1, 1]])]     # 4 labelled pixels: class 1 x4; class 3 appears nowhere
    examples = [{"label": label.astype(np.int32), "id": str(i)} for i, label in enumerate(maps)]
    stats = statistics.label_statistics(examples, num_classes=4, num_threads=1)
    np.testing.assert_array_equal(stats.pixel_counts, [4, 5, 2, 0])
    # Class 0 is in maps 0 and 1 (4 + 3 pixels), class 1 in maps 0 and 2 (4 + 4), class 2 in map 1 (3).
    np.testing.assert_array_equal(stats.present_image_pixels, [7, 8, 3, 0])
    np.testing.assert_array_equal(stats.present_images, [2, 2, 1, 0])
    # freq = 4/7, 5/8, 2/3; median 5/8; weight = (5/8) / freq.
    np.testing.assert_allclose(statistics.class_weights(stats, method="median_frequency"),
                               [5 / 8 * 7 / 4, 1.0, 5 / 8 * 3 / 2, 0.0], rtol=1e-6)
    # The global frequencies 4/11, 5/11, 2/11 (median 4/11) give other weights: the old definition.
    np.testing.assert_allclose(statistics.class_weights(stats, method="median_global_frequency"),
                               [1.0, 0.8, 2.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(statistics.class_weights(stats, method="inverse_frequency"),
                               data.class_weights_from_counts([4, 5, 2, 0], method="inverse_frequency"))
