"""`folder`: a user's own images and label PNGs, converted once into our TFDS format.

Layout: `images/` (PNG, JPEG, TIFF or BMP), `labels/` (8-bit single-channel PNG class maps, mode
L, P or 1; 255 = ignore) and optionally `instances/` (16-bit PNG instance ids, 0 = background),
paired by file stem (`images/a.jpg` <-> `labels/a.png`). The result lives in
`<data_dir>/seg_jax_folder/<variant>/1.0.0/` with splits `train` and `validation`; class names are
stored with it. Every problem a user can cause raises `FolderDatasetError` naming the file.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, UnidentifiedImageError

from seg_jax import labels as label_rules
from seg_jax.data.sources import tfds_format

BUILDER_NAME = "seg_jax_folder"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
LABEL_SUFFIXES = (".png",)
_IMAGE_MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr")
_LABEL_MODES = ("1", "L", "P")
_INSTANCE_MODES = ("1", "L", "P", "I;16", "I;16L", "I;16B", "I")


class FolderDatasetError(ValueError):
    """A problem with the user's image/label folders; the message names the file at fault."""


@dataclasses.dataclass(frozen=True)
class FilePair:
    """The files of one example: image, label and optional instance-id PNG (paths)."""

    stem: str
    image: str
    label: str
    instances: str | None = None


def _files_by_stem(directory: str, suffixes: Sequence[str]) -> dict[str, str]:
    if not os.path.isdir(directory):
        raise FolderDatasetError(f"not a directory: {directory!r}")
    found: dict[str, str] = {}
    for name in sorted(os.listdir(directory)):
        stem, suffix = os.path.splitext(name)
        if suffix.lower() not in suffixes:
            continue
        path = os.path.join(directory, name)
        if stem in found:
            raise FolderDatasetError(f"two files with stem {stem!r}: {found[stem]!r} and {path!r}")
        found[stem] = path
    return found


def pair_files(images_dir: str, labels_dir: str, instances_dir: str | None = None) -> list[FilePair]:
    """Pairs images with labels (and instance maps) by file stem, sorted by stem.

    Raises:
        FolderDatasetError: a directory is missing or empty, or a file has no partner.
    """
    images = _files_by_stem(images_dir, IMAGE_SUFFIXES)
    labels = _files_by_stem(labels_dir, LABEL_SUFFIXES)
    instances = _files_by_stem(instances_dir, LABEL_SUFFIXES) if instances_dir else None
    if not images:
        raise FolderDatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images_dir!r}")
    for stem, path in images.items():
        if stem not in labels:
            raise FolderDatasetError(f"image {path!r} has no label {stem}.png in {labels_dir!r}")
        if instances is not None and stem not in instances:
            raise FolderDatasetError(f"image {path!r} has no instance map {stem}.png in {instances_dir!r}")
    for others, directory in ((labels, images_dir), (instances or {}, images_dir)):
        for stem, path in others.items():
            if stem not in images:
                raise FolderDatasetError(f"{path!r} has no image named {stem}.* in {directory!r}")
    return [FilePair(s, images[s], labels[s], instances[s] if instances else None) for s in sorted(images)]


def _open(path: str, modes: Sequence[str], what: str) -> Image.Image:
    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened.copy()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise FolderDatasetError(f"cannot read {what} {path!r}: {error}") from None
    if image.mode not in modes:
        raise FolderDatasetError(f"{what} {path!r} has mode {image.mode}; expected one of {', '.join(modes)}")
    return image


def read_image(path: str) -> np.ndarray:
    """uint8 [H, W, 3] RGB pixels of an 8-bit image file (grey and palette images are expanded)."""
    return np.asarray(_open(path, _IMAGE_MODES, "image").convert("RGB"), dtype=np.uint8)


def read_label(path: str, *, num_classes: int, ignore_index: int = label_rules.STORED_IGNORE) -> np.ndarray:
    """uint8 [H, W] class ids of an 8-bit single-channel PNG; values in [0, num_classes) or ignore."""
    label = np.asarray(_open(path, _LABEL_MODES, "label")).astype(np.uint8)
    bad = label_rules.out_of_range(label, num_classes=num_classes, ignore_index=ignore_index)
    if bad.size:
        raise FolderDatasetError(f"label {path!r} has values {bad[:10].tolist()} outside [0, {num_classes}) "
                                 f"(only {ignore_index} = ignore is allowed besides)")
    return label


def read_instances(path: str) -> np.ndarray:
    """uint16 [H, W] instance ids (0 = background) of a 16-bit (or 8-bit) PNG, read with Pillow."""
    ids = np.asarray(_open(path, _INSTANCE_MODES, "instance map")).astype(np.int64)
    if ids.min() < 0 or ids.max() > np.iinfo(np.uint16).max:
        raise FolderDatasetError(f"instance map {path!r} has ids outside [0, 65535]")
    return ids.astype(np.uint16)


def read_pair(pair: FilePair, *, num_classes: int,
              ignore_index: int = label_rules.STORED_IGNORE) -> dict[str, np.ndarray]:
    """The decoded example of `pair`: image [H, W, 3], label [H, W], optional instances [H, W]."""
    example = {"image": read_image(pair.image),
               "label": read_label(pair.label, num_classes=num_classes, ignore_index=ignore_index)}
    if pair.instances:
        example["instances"] = read_instances(pair.instances)
    height, width = example["image"].shape[:2]
    for key, path in (("label", pair.label), ("instances", pair.instances)):
        if key in example and example[key].shape != (height, width):
            h, w = example[key].shape
            raise FolderDatasetError(f"{key} {path!r} is {h}x{w} pixels but image {pair.image!r} is "
                                     f"{height}x{width}")
    return example


def split_pairs(pairs: Sequence[FilePair], *, val_fraction: float, seed: int) -> dict[str, list[FilePair]]:
    """Deterministic train/validation split: round(n * val_fraction) pairs (at least 1 when the
    fraction is positive and n >= 2) chosen by a permutation seeded with `seed`."""
    if not 0 <= val_fraction < 1:
        raise FolderDatasetError(f"val_fraction must be in [0, 1), got {val_fraction}")
    count = round(len(pairs) * val_fraction)
    if val_fraction > 0 and len(pairs) >= 2:
        count = min(max(count, 1), len(pairs) - 1)
    chosen = set(np.random.default_rng(seed).permutation(len(pairs))[:count].tolist())
    return {"train": [p for i, p in enumerate(pairs) if i not in chosen],
            "validation": [p for i, p in enumerate(pairs) if i in chosen]}


class FolderBuilder(tfds_format.StoredBuilder, skip_registration=True):
    """Writes one folder dataset; read it back with `load_builder` (no paths needed then)."""

    name = BUILDER_NAME

    def __init__(self, *, splits: dict[str, list[FilePair]], num_classes: int, class_names: Sequence[str],
                 ignore_index: int = label_rules.STORED_IGNORE, **kwargs):
        self._splits = splits
        self._num_classes = num_classes
        self._class_names = tuple(class_names)
        self._ignore_index = ignore_index
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        has_instances = any(p.instances for pairs in self._splits.values() for p in pairs)
        return tfds_format.stored_info(self, class_names=self._class_names, has_instances=has_instances,
                                       description="Images and labels converted from a user's folders.")

    def _split_generators(self, dl_manager):
        del dl_manager  # Local files only.
        return {split: self._generate_examples(pairs) for split, pairs in self._splits.items()}

    def _generate_examples(self, pairs: list[FilePair]):
        for pair in pairs:
            example = read_pair(pair, num_classes=self._num_classes, ignore_index=self._ignore_index)
            yield pair.stem, tfds_format.stored_example(
                image=example["image"], label=example["label"], instances=example.get("instances"),
                example_id=pair.stem)


def dataset_dir(data_dir: str, variant: str = "default") -> str:
    """Where a converted folder dataset lives."""
    return os.path.join(os.path.expanduser(data_dir), BUILDER_NAME, variant, tfds_format.VERSION)


def convert_folder(*, images: str, labels: str, num_classes: int, out: str, instances: str | None = None,
                   class_names: Sequence[str] | None = None, val_fraction: float = 0.1, seed: int = 0,
                   variant: str = "default", ignore_index: int = label_rules.STORED_IGNORE) -> str:
    """Converts image/label(/instance) folders into our TFDS format under data dir `out`.

    Every file is checked while it is written; on the first problem nothing is kept and a
    `FolderDatasetError` names the file. An existing conversion in the same place is reused.

    Args:
        images, labels, instances: directories, paired by file stem (module docstring).
        num_classes: label values must lie in [0, num_classes) or equal `ignore_index`.
        out: TFDS data dir (what `data.data_dir` points to when training on it).
        class_names: `num_classes` names; default "class_0", "class_1", ...
        val_fraction: share of images put in the `validation` split.
        seed: seeds the train/validation split.
    Returns:
        The dataset directory `<out>/seg_jax_folder/<variant>/1.0.0`.
    """
    if not 1 <= num_classes <= label_rules.MAX_STORED_CLASSES:
        raise FolderDatasetError(f"num_classes must be in [1, {label_rules.MAX_STORED_CLASSES}] for 8-bit labels, "
                                 f"got {num_classes}")
    names = tuple(class_names) if class_names else tuple(f"class_{i}" for i in range(num_classes))
    if len(names) != num_classes:
        raise FolderDatasetError(f"{len(names)} class names given for num_classes={num_classes}: {names}")
    splits = split_pairs(pair_files(images, labels, instances), val_fraction=val_fraction, seed=seed)
    builder = FolderBuilder(splits=splits, num_classes=num_classes, class_names=names, ignore_index=ignore_index,
                            data_dir=os.path.expanduser(out), config=tfds.core.BuilderConfig(name=variant),
                            file_format="array_record")
    tfds_format.build(builder)
    return dataset_dir(out, variant)


def load_builder(data_dir: str, variant: str = "default") -> tfds.core.DatasetBuilder:
    """The read-only builder of a converted folder dataset; clear error when there is none."""
    path = dataset_dir(data_dir, variant)
    if not os.path.isfile(os.path.join(path, "dataset_info.json")):
        raise FileNotFoundError(
            f"no converted folder dataset in {path!r}; run `python -m seg_jax.data.folder --images DIR "
            f"--labels DIR --num_classes N --out {data_dir}` or set data.folder.images/labels/num_classes")
    return tfds.builder_from_directory(path)
