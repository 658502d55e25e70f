"""Training targets stored by the data stage: U-Net weight maps, border-aware class maps and normalised distance
maps derived from instance ids when a dataset is prepared, checked against `seg_jax.data.derived.targets`
recomputed from the stored instances, one copy per parameter set, aligned through augmentation, and clear errors
without instances."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from seg_jax import data
from seg_jax.data.derived.targets import border_targets, instance_distance, unet_weight_map
from seg_jax.data.sources import nuclei, shapes

BORDER_NAMES = ("background", "interior", "border")


def tiny_config(name: str, data_dir, **overrides) -> object:
    cfg = data.base_config(name)
    cfg.data_dir = str(data_dir)
    cfg.variant = "tiny"
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def examples(cfg, split: str) -> list[dict]:
    source = data.resolve(cfg).source(split)
    return [source[i] for i in range(len(source))]


def inverse_frequency(counts) -> np.ndarray:
    """Hand formula: w_c = total / (K n_c) over the K classes with pixels, 0 for the others."""
    counts = np.asarray(counts, np.float64)
    weights = np.zeros_like(counts)
    present = counts > 0
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def border_with_ignore(label: np.ndarray, instances: np.ndarray, width: int) -> np.ndarray:
    return np.where(label == 255, 255, border_targets(instances, width=width))


def reference_class_weights(base: list[dict], *, num_classes: int, width: int | None) -> np.ndarray:
    """w_c of the trained class map (semantic, or border classes when `width` is set) over base examples."""
    counts = np.zeros(num_classes, np.int64)
    for example in base:
        label = example["label"] if width is None else border_with_ignore(example["label"], example["instances"], width)
        counts += np.bincount(label[label != 255].ravel(), minlength=num_classes)
    return inverse_frequency(counts)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def border_cfg(data_dir):
    cfg = tiny_config("nuclei", data_dir, targets="border", border_width=2, weight_map="unet",
                      weight_map_w0=10.0, weight_map_sigma=5.0)
    cfg.crop_size, cfg.scale_range = (24, 24), (0.5, 2.0)
    return cfg


@pytest.fixture(scope="module")
def border_class_weights(data_dir):
    return reference_class_weights(examples(tiny_config("nuclei", data_dir), "train"), num_classes=3, width=2)


# ---------------------------------------------------------------- stored values


def test_stored_border_labels_and_weight_maps_equal_recomputation(border_cfg, data_dir, border_class_weights):
    ds = data.resolve(border_cfg)
    assert (ds.num_classes, ds.class_names, ds.has_instances) == (3, BORDER_NAMES, True)
    assert ds.split_sizes == {"train": 24, "validation": 8, "test": 8}
    plain = tiny_config("nuclei", data_dir)
    for split in ("train", "validation", "test"):
        for base, stored in zip(examples(plain, split), examples(border_cfg, split), strict=True):
            assert stored["id"] == base["id"]
            np.testing.assert_array_equal(stored["image"], base["image"])
            np.testing.assert_array_equal(stored["instances"], base["instances"])
            expected_label = border_targets(base["instances"], width=2)
            np.testing.assert_array_equal(stored["label"], expected_label)
            expected = unet_weight_map(base["instances"], class_weights=border_class_weights, labels=expected_label,
                                       w0=10.0, sigma=5.0)
            assert stored["weights"].dtype == np.float32
            np.testing.assert_allclose(stored["weights"], expected, rtol=1e-6)
    # The separation term is really there: gap pixels weigh more than their class weight.
    assert (stored["weights"] > border_class_weights[stored["label"]] + 1).any()


def test_semantic_targets_with_unet_weights_keep_the_stored_classes(tmp_path):
    cfg = tiny_config("shapes", tmp_path, weight_map="unet", weight_map_w0=5.0, weight_map_sigma=3.0)
    ds = data.resolve(cfg)
    assert (ds.num_classes, ds.class_names) == (6, shapes.CLASS_NAMES)
    base = examples(tiny_config("shapes", tmp_path), "train")
    class_weights = reference_class_weights(base, num_classes=6, width=None)
    for plain, stored in zip(base, examples(cfg, "train"), strict=True):
        np.testing.assert_array_equal(stored["label"], plain["label"])
        expected = unet_weight_map(plain["instances"], class_weights=class_weights, labels=plain["label"],
                                   w0=5.0, sigma=3.0)
        np.testing.assert_allclose(stored["weights"], expected, rtol=1e-6)


def test_other_parameters_prepare_their_own_copy(border_cfg, data_dir, border_class_weights):
    first = examples(border_cfg, "validation")
    lighter = border_cfg.copy_and_resolve_references()
    lighter.weight_map_w0 = 3.0
    thinner = border_cfg.copy_and_resolve_references()
    thinner.border_width, thinner.weight_map = 1, None
    for ten, three, thin in zip(first, examples(lighter, "validation"), examples(thinner, "validation"), strict=True):
        np.testing.assert_array_equal(three["label"], ten["label"])
        # Only the separation term scales with w0.
        w_c = border_class_weights[ten["label"]]
        np.testing.assert_allclose(three["weights"] - w_c, 0.3 * (ten["weights"] - w_c), rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(thin["label"], border_targets(ten["instances"], width=1))
        assert "weights" not in thin
    assert any(not np.array_equal(t["weights"], l["weights"]) for t, l in zip(first, examples(lighter, "validation")))
    assert sorted(os.listdir(data_dir / "seg_jax_nuclei_targets")) == [
        "tiny_border1", "tiny_border2_unet_w0=10.0_sigma=5.0", "tiny_border2_unet_w0=3.0_sigma=5.0"]
    # The first copy is still the one read for the first parameters.
    for before, after in zip(first, examples(border_cfg, "validation"), strict=True):
        np.testing.assert_array_equal(after["weights"], before["weights"])


def test_stored_distance_maps_equal_recomputation_and_keep_the_classes(data_dir):
    cfg = tiny_config("nuclei", data_dir, distance_target="normalized")
    ds = data.resolve(cfg)
    assert ds.class_names == nuclei.CLASS_NAMES and ds.directory.endswith("tiny_distance_normalized/1.0.0")
    for base, stored in zip(examples(tiny_config("nuclei", data_dir), "validation"), examples(cfg, "validation"),
                            strict=True):
        np.testing.assert_array_equal(stored["label"], base["label"])
        assert stored["distance"].dtype == np.float32 and "weights" not in stored
        np.testing.assert_array_equal(stored["distance"], instance_distance(base["instances"]))
    both = tiny_config("nuclei", data_dir, targets="border", distance_target="normalized")
    assert data.resolve(both).directory.endswith("tiny_border2_distance_normalized/1.0.0")
    assert "distance" in examples(both, "test")[0]


# ---------------------------------------------------------------- through the pipeline


def test_distance_stays_aligned_with_instances_after_augmentation(data_dir):
    cfg = tiny_config("nuclei", data_dir, distance_target="normalized")
    cfg.crop_size, cfg.scale_range = (24, 24), (0.5, 2.0)
    stream = data.train_batches(data.resolve(cfg), global_batch_size=8, seed=1, num_local_devices=1)
    for _ in range(3):
        batch = {key: value[0] for key, value in next(stream).items()}
        assert batch["distance"].shape == batch["instances"].shape == (8, 24, 24)
        # Nearest-neighbour resampling, crop and flip move both together: positive exactly on instance pixels.
        np.testing.assert_array_equal(batch["distance"] > 0, batch["instances"] > 0)
        assert batch["distance"].max() <= 1.0
    padded = list(data.eval_batches(data.resolve(cfg), split="validation", global_batch_size=6, num_local_devices=1))
    assert (padded[-1]["distance"][0][padded[-1]["mask"][0] == 0] == 0).all()



def test_weights_stay_aligned_with_labels_after_augmentation(border_cfg, border_class_weights):
    stream = data.train_batches(data.resolve(border_cfg), global_batch_size=8, seed=3, num_local_devices=1)
    raised = 0
    for _ in range(3):
        batch = {key: value[0] for key, value in next(stream).items()}
        assert batch["weights"].shape == batch["label"].shape == batch["instances"].shape == (8, 24, 24)
        ignored = batch["label"] == 255  # padding of crops larger than the rescaled image
        np.testing.assert_array_equal(batch["weights"][ignored], 0)
        w_c = border_class_weights[np.where(ignored, 0, batch["label"])]
        extra = np.where(ignored, 0, batch["weights"] - w_c)
        # Instance pixels carry their class weight only; the separation term lies on background gaps.
        np.testing.assert_allclose(extra[batch["instances"] > 0], 0, atol=1e-6)
        assert (extra > -1e-6).all()
        assert (batch["instances"][extra > 1e-3] == 0).all()
        raised += int((extra > 1e-3).sum())
        # Interior pixels lie on instances, after the same geometric transform.
        assert (batch["instances"][batch["label"] == 1] > 0).all()
    assert raised > 0


def test_eval_batches_keep_the_true_instance_ids(border_cfg, data_dir):
    base = examples(tiny_config("nuclei", data_dir), "validation")
    batches = list(data.eval_batches(data.resolve(border_cfg), split="validation", global_batch_size=6,
                                     num_local_devices=1))
    assert len(batches) == 2
    for batch in batches:
        for row in range(6):
            index = int(batch["index"][0, row])
            if index < 0:
                np.testing.assert_array_equal(batch["instances"][0, row], 0)
                continue
            np.testing.assert_array_equal(batch["instances"][0, row], base[index]["instances"])
            np.testing.assert_array_equal(batch["label"][0, row], border_targets(base[index]["instances"], width=2))


# ---------------------------------------------------------------- folder datasets with 16-bit instance ids


def test_folder_instances_give_targets_that_keep_ignored_pixels(tmp_path):
    rng = np.random.default_rng(0)
    for directory in ("images", "labels", "instances"):
        os.makedirs(tmp_path / directory)
    for number in range(4):
        instances = np.zeros((14, 18), np.uint16)
        for instance_id in (300, 1000 + number, 65535):  # ids beyond 8 bits
            top, left = rng.integers(0, 9), rng.integers(0, 12)
            instances[top:top + 5, left:left + 6] = instance_id
        label = (instances > 0).astype(np.uint8)
        label[0, :4] = 255
        Image.fromarray(rng.integers(0, 256, (14, 18, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{number}.png")
        Image.fromarray(label).save(tmp_path / "labels" / f"{number}.png")
        Image.fromarray(instances).save(tmp_path / "instances" / f"{number}.png")  # mode I;16
    cfg = data.base_config("folder")
    cfg.data_dir = str(tmp_path / "tfds")
    cfg.folder.images, cfg.folder.labels, cfg.folder.instances = (str(tmp_path / d) for d in
                                                                 ("images", "labels", "instances"))
    cfg.folder.num_classes, cfg.folder.val_fraction = 2, 0.25
    cfg.targets, cfg.weight_map, cfg.weight_map_sigma = "border", "unet", 2.0
    assert data.resolve(cfg).class_names == BORDER_NAMES
    plain = cfg.copy_and_resolve_references()
    plain.targets, plain.weight_map = "semantic", None
    class_weights = reference_class_weights(examples(plain, "train"), num_classes=3, width=2)
    for split in ("train", "validation"):
        for base, stored in zip(examples(plain, split), examples(cfg, split), strict=True):
            assert base["instances"].max() == 65535
            expected_label = border_with_ignore(base["label"], base["instances"], 2)
            np.testing.assert_array_equal(stored["label"], expected_label)
            np.testing.assert_array_equal(stored["label"][0, :4], 255)
            expected = unet_weight_map(base["instances"], class_weights=class_weights, labels=expected_label,
                                       w0=10.0, sigma=2.0)
            np.testing.assert_allclose(stored["weights"], expected, rtol=1e-6)
            np.testing.assert_array_equal(stored["weights"][0, :4], 0)


# ---------------------------------------------------------------- configuration and errors


def test_datasets_without_instances_refuse_derived_targets(tmp_path):
    pets = data.base_config("oxford_iiit_pet")
    pets.data_dir, pets.targets = str(tmp_path / "tfds"), "border"
    for call in (data.class_names, data.resolve):
        with pytest.raises(ValueError, match="dataset 'oxford_iiit_pet' has no instance ids.*data.targets='border'"):
            call(pets)
    assert not os.path.exists(tmp_path / "tfds")  # refused before any download
    cityscapes = data.base_config("cityscapes")
    cityscapes.data_dir, cityscapes.weight_map = str(tmp_path / "tfds"), "unet"
    with pytest.raises(ValueError, match="dataset 'cityscapes' has no instance ids.*data.weight_map='unet'"):
        data.resolve(cityscapes)
    # A folder dataset converted without instance maps: only its files tell.
    os.makedirs(tmp_path / "images"), os.makedirs(tmp_path / "labels")
    for number in range(2):
        Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(tmp_path / "images" / f"{number}.png")
        Image.fromarray(np.zeros((6, 6), np.uint8)).save(tmp_path / "labels" / f"{number}.png")
    folder = data.base_config("folder")
    folder.data_dir, folder.weight_map = str(tmp_path / "tfds"), "unet"
    folder.folder.images, folder.folder.labels, folder.folder.num_classes = (
        str(tmp_path / "images"), str(tmp_path / "labels"), 2)
    with pytest.raises(ValueError, match="dataset 'folder' .*has no instance ids.*--instances"):
        data.resolve(folder)


def test_class_names_follow_the_targets_without_touching_files(tmp_path):
    cfg = tiny_config("nuclei", tmp_path / "nowhere")
    assert (cfg.targets, cfg.border_width, cfg.weight_map, cfg.weight_map_w0, cfg.weight_map_sigma) == (
        "semantic", 2, None, 10.0, 5.0)
    assert data.class_names(cfg) == nuclei.CLASS_NAMES
    cfg.weight_map = "unet"
    assert data.class_names(cfg) == nuclei.CLASS_NAMES
    cfg.targets = "border"
    assert data.class_names(cfg) == BORDER_NAMES
    folder = data.base_config("folder")
    folder.data_dir, folder.targets = str(tmp_path / "nowhere"), "border"
    assert data.class_names(folder) == BORDER_NAMES  # no folder.num_classes needed
    assert not os.path.exists(tmp_path / "nowhere")


@pytest.mark.parametrize("key,value,message", [
    ("targets", "borders", "unknown data.targets 'borders'; valid values: semantic, border"),
    ("weight_map", "gauss", "unknown data.weight_map 'gauss'; valid values: None, 'unet'"),
    ("border_width", 0, "data.border_width must be a whole number of pixels >= 1, got 0"),
    ("weight_map_sigma", 0.0, "data.weight_map_sigma > 0"),
    ("distance_target", "pixels", "unknown data.distance_target 'pixels'; valid values: None, 'normalized'"),
])
def test_invalid_target_settings_name_the_key(tmp_path, key, value, message):
    cfg = tiny_config("nuclei", tmp_path, targets="border", weight_map="unet")
    cfg[key] = value
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        data.class_names(cfg)
