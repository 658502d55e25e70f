"""`folder`: a user's own images and label PNGs, converted once into our TFDS format.

Layout: `images/` (PNG, JPEG, TIFF or BMP; 16-bit and float images scaled to 8 bits by the conversion's
intensity scaling, `image_files`), `labels/` (single-channel PNG or TIFF class maps, 8 or 16 bit; 255 =
ignore; JPEG refused: lossy) and optionally `instances/` (8/16-bit PNG or TIFF instance ids, 0 = background),
paired by file stem (`images/a.jpg` <-> `labels/a.png`). The result lives in
`<data_dir>/seg_jax_folder/<variant>/1.0.0/` with splits `train` and `validation` (no `validation` when
`val_fraction` is 0 or there is one image); class names and the conversion's record (its arguments, the intensity
scaling that prediction applies again, and a fingerprint of the source files, `folder_record`) are stored with
it. Converting into a place that holds another conversion is refused unless `overwrite=True`. Every problem a
user can cause raises `FolderDatasetError` naming the file, or the fields that differ.
"""
from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import logging
import os
import shutil
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, UnidentifiedImageError

from seg_jax import labels as label_rules
from seg_jax.data.sources import folder_record, tfds_format
from seg_jax.data.sources.image_files import (IMAGE_SUFFIXES, LABEL_SUFFIXES, LOSSY_LABEL_REASON, LOSSY_SUFFIXES,
                                              FolderDatasetError, intensity_scaling, read_image, read_map)

BUILDER_NAME = "seg_jax_folder"
_LOG = logging.getLogger(__name__)  # the CLI prints these records; training runs log them
_ALPHA_MODES = ("LA", "PA", "RGBA")


class ConversionMismatchError(FolderDatasetError):
    """A conversion, or a data config, disagrees with the conversion already stored; names each field."""


@dataclasses.dataclass(frozen=True)
class Conversion:
    """What `convert_folder` did: the dataset directory, examples per split, and whether it wrote
    anything (False: an identical conversion was already there)."""

    path: str
    split_sizes: dict[str, int]
    written: bool


@dataclasses.dataclass(frozen=True)
class FilePair:
    """The files of one example: image, label and optional instance-id PNG (paths)."""

    stem: str
    image: str
    label: str
    instances: str | None = None


def _files_by_stem(directory: str, suffixes: Sequence[str], *, maps: str | None = None) -> dict[str, str]:
    """Files of `directory` with one of `suffixes` by stem; for label / instance maps (`maps` names them), a JPEG is
    refused with the reason."""
    if not os.path.isdir(directory):
        raise FolderDatasetError(f"not a directory: {directory!r}")
    found: dict[str, str] = {}
    for name in sorted(os.listdir(directory)):
        stem, suffix = os.path.splitext(name)
        if maps and suffix.lower() in LOSSY_SUFFIXES:
            raise FolderDatasetError(f"{maps} {os.path.join(directory, name)!r} is a JPEG: {LOSSY_LABEL_REASON}")
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
    labels = _files_by_stem(labels_dir, LABEL_SUFFIXES, maps="label")
    instances = _files_by_stem(instances_dir, LABEL_SUFFIXES, maps="instance map") if instances_dir else None
    if not images:
        raise FolderDatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images_dir!r}")
    for stem, path in images.items():
        if stem not in labels:
            raise FolderDatasetError(f"image {path!r} has no label {stem}.png (or .tif) in {labels_dir!r}")
        if instances is not None and stem not in instances:
            raise FolderDatasetError(f"image {path!r} has no instance map {stem}.png (or .tif) in "
                                     f"{instances_dir!r}")
    for others, directory in ((labels, images_dir), (instances or {}, images_dir)):
        for stem, path in others.items():
            if stem not in images:
                raise FolderDatasetError(f"{path!r} has no image named {stem}.* in {directory!r}")
    return [FilePair(s, images[s], labels[s], instances[s] if instances else None) for s in sorted(images)]


def read_label(path: str, *, num_classes: int, ignore_index: int = label_rules.STORED_IGNORE) -> np.ndarray:
    """uint8 [H, W] class ids of a single-channel PNG or TIFF (8 or 16 bit); values in [0, num_classes) or ignore."""
    label = read_map(path, what="label")
    bad = label_rules.out_of_range(label, num_classes=num_classes, ignore_index=ignore_index)
    if bad.size:
        raise FolderDatasetError(f"label {path!r} has values {bad[:10].tolist()} outside [0, {num_classes}) "
                                 f"(only {ignore_index} = ignore is allowed besides)")
    return label.astype(np.uint8)


def read_instances(path: str) -> np.ndarray:
    """uint16 [H, W] instance ids (0 = background) of an 8/16-bit PNG or an integer TIFF."""
    ids = read_map(path, what="instance map")
    if ids.min() < 0 or ids.max() > np.iinfo(np.uint16).max:
        raise FolderDatasetError(f"instance map {path!r} has ids outside [0, 65535]")
    return ids.astype(np.uint16)


def read_pair(pair: FilePair, *, num_classes: int, ignore_index: int = label_rules.STORED_IGNORE,
              intensity: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """The decoded example of `pair`: image uint8 [H, W, 3] (scaled by `intensity` when it is not 8-bit,
    `image_files.read_image`), label [H, W], optional instances [H, W]."""
    example = {"image": read_image(pair.image, intensity=intensity),
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


def images_with_alpha(pairs: Sequence[FilePair]) -> list[str]:
    """Paths of the images with an alpha channel or palette transparency (read from the file headers;
    unreadable files are left to `read_pair` to report)."""
    found = []
    for pair in pairs:
        try:
            with Image.open(pair.image) as opened:
                if opened.mode in _ALPHA_MODES or (opened.mode == "P" and "transparency" in opened.info):
                    found.append(pair.image)
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
            continue
    return found


def split_pairs(pairs: Sequence[FilePair], *, val_fraction: float, seed: int) -> dict[str, list[FilePair]]:
    """Deterministic train/validation split: round(n * val_fraction) pairs (at least 1 when the
    fraction is positive and n >= 2; train always keeps at least 1) chosen by a permutation seeded
    with `seed`. The validation list is empty when `val_fraction` is 0 or n is 1."""
    if not 0 <= val_fraction < 1:
        raise FolderDatasetError(f"val_fraction must be in [0, 1), got {val_fraction}")
    count = min(round(len(pairs) * val_fraction), len(pairs) - 1)
    if val_fraction > 0 and len(pairs) >= 2:
        count = max(count, 1)
    chosen = set(np.random.default_rng(seed).permutation(len(pairs))[:count].tolist())
    return {"train": [p for i, p in enumerate(pairs) if i not in chosen],
            "validation": [p for i, p in enumerate(pairs) if i in chosen]}


class FolderBuilder(tfds_format.StoredBuilder, skip_registration=True):
    """Writes one folder dataset; read it back with `load_builder` (no paths needed then)."""

    name = BUILDER_NAME

    def __init__(self, *, splits: dict[str, list[FilePair]], num_classes: int, class_names: Sequence[str],
                 ignore_index: int = label_rules.STORED_IGNORE, record: dict[str, Any] | None = None,
                 intensity: dict[str, Any] | None = None, **kwargs):
        self._splits = {split: pairs for split, pairs in splits.items() if pairs}  # TFDS refuses empty splits
        self._num_classes = num_classes
        self._class_names = tuple(class_names)
        self._ignore_index = ignore_index
        self._record = record
        self._intensity = intensity
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        has_instances = any(p.instances for pairs in self._splits.values() for p in pairs)
        return tfds_format.stored_info(self, class_names=self._class_names, has_instances=has_instances,
                                       description="Images and labels converted from a user's folders.",
                                       metadata={"conversion": self._record} if self._record else None)

    # Local files: TFDS's "Downloading and preparing dataset ..." / "... downloaded and prepared" lines
    # would only mislead (`convert_folder` says what it writes).
    def _log_download_bytes(self) -> None:
        pass

    def _log_download_done(self) -> None:
        pass

    def _split_generators(self, dl_manager):
        del dl_manager  # Local files only.
        return {split: self._generate_examples(pairs) for split, pairs in self._splits.items()}

    def _generate_examples(self, pairs: list[FilePair]):
        for pair in pairs:
            example = read_pair(pair, num_classes=self._num_classes, ignore_index=self._ignore_index,
                                intensity=self._intensity)
            yield pair.stem, tfds_format.stored_example(
                image=example["image"], label=example["label"], instances=example.get("instances"),
                example_id=pair.stem)


def dataset_dir(data_dir: str, variant: str = "default") -> str:
    """Where a converted folder dataset lives."""
    return os.path.join(os.path.expanduser(data_dir), BUILDER_NAME, variant, tfds_format.VERSION)


def _class_names(num_classes: int, class_names: Sequence[str] | None) -> tuple[str, ...]:
    if not 1 <= num_classes <= label_rules.MAX_STORED_CLASSES:
        raise FolderDatasetError(f"num_classes must be in [1, {label_rules.MAX_STORED_CLASSES}] for 8-bit labels, "
                                 f"got {num_classes}")
    names = tuple(class_names) if class_names else tuple(f"class_{i}" for i in range(num_classes))
    if len(names) != num_classes:
        raise FolderDatasetError(f"{len(names)} class names given for num_classes={num_classes}: {names}")
    return names


def _split_sizes(splits: dict[str, list[FilePair]]) -> dict[str, int]:
    return {split: len(pairs) for split, pairs in splits.items() if pairs}


@contextlib.contextmanager
def _set_aside(path: str, *, keep: bool) -> Iterator[None]:
    """While the body runs, `path` (an old conversion) is moved aside when not `keep`; it is deleted
    when the body succeeds and put back when it fails."""
    if keep or not os.path.isdir(path):
        yield
        return
    aside = os.path.join(os.path.dirname(path), f".replaced.{os.path.basename(path)}.{os.getpid()}")
    os.replace(path, aside)
    try:
        yield
    except BaseException:
        if not os.path.isdir(path):
            os.replace(aside, path)
        raise
    shutil.rmtree(aside)


def _remove_derived(data_dir: str, variant: str) -> None:
    """Deletes the derived-target copies (`derived.stored_targets`) made from the variant's old conversion."""
    base = f"{BUILDER_NAME}/{variant}"
    pattern = os.path.join(os.path.expanduser(data_dir), f"{BUILDER_NAME}_targets", "*", tfds_format.VERSION,
                           "metadata.json")
    for metadata in glob.glob(pattern):
        with open(metadata) as f:
            if json.load(f).get("base") == base:
                _LOG.info("removing %s (derived from the replaced conversion)", os.path.dirname(metadata))
                shutil.rmtree(os.path.dirname(metadata))


def convert_folder(*, images: str, labels: str, num_classes: int, out: str, instances: str | None = None,
                   class_names: Sequence[str] | None = None, val_fraction: float = 0.1, seed: int = 0,
                   variant: str = "default", ignore_index: int = label_rules.STORED_IGNORE,
                   intensity: Mapping[str, Any] | None = None, overwrite: bool = False) -> Conversion:
    """Converts image/label(/instance) folders into our TFDS format under data dir `out`.

    Every file is checked while it is written; on the first problem nothing is kept and a
    `FolderDatasetError` names the file. The dataset records these arguments and a fingerprint of the
    source files (`folder_record`). When `out`/`variant` already holds a conversion: an identical one
    (same arguments, same source files) is kept and nothing is written; another one is refused with a
    `ConversionMismatchError` naming every field that differs, old → new, or replaced when `overwrite`
    (with the derived-target copies made from it). Images with an alpha channel are stored as RGB, with one
    warning. Messages go to the `logging` logger of this module; TFDS's progress bars are not shown.

    Args:
        images, labels, instances: directories, paired by file stem (module docstring).
        num_classes: label values must lie in [0, num_classes) or equal `ignore_index`.
        out: TFDS data dir (what `data.data_dir` points to when training on it).
        class_names: `num_classes` names; default "class_0", "class_1", ...
        val_fraction: share of images put in the `validation` split, in [0, 1); 0 (or a single image)
            writes no `validation` split.
        seed: seeds the train/validation split.
        intensity: how images that are not 8-bit (16-bit, float) become uint8: `{"method": "percentile" |
            "range", "low": ..., "high": ...}` (`image_files.intensity_scaling`; percentiles default to 1 and 99.8),
            recorded with the dataset so that prediction scales new images alike; None: such images are refused.
        overwrite: replace a different conversion in the same place instead of refusing.
    Returns:
        A `Conversion`: the dataset directory `<out>/seg_jax_folder/<variant>/1.0.0`, the split sizes and
        whether anything was written.
    """
    names = _class_names(num_classes, class_names)
    scaling = intensity_option(intensity)
    pairs = pair_files(images, labels, instances)
    splits = split_pairs(pairs, val_fraction=val_fraction, seed=seed)
    record = folder_record.make_record(pairs=pairs, images=images, labels=labels, instances=instances,
                                       num_classes=num_classes, class_names=names, val_fraction=val_fraction,
                                       seed=seed, ignore_index=ignore_index, intensity=scaling)
    path = dataset_dir(out, variant)
    old = folder_record.stored_record(path)
    if old is not None:
        changed = (folder_record.differences(old, record) if old else
                   ["the stored conversion records no arguments (made by an older seg_jax)"])
        if not changed:
            _LOG.info("%s already holds this conversion (same arguments, same %d source files); nothing written",
                      path, record["num_files"])
            return Conversion(path, _split_sizes(splits), written=False)
        if not overwrite:
            raise ConversionMismatchError(
                f"{path} holds a different conversion: {'; '.join(changed)}. Pass --overwrite "
                f"(convert_folder(..., overwrite=True)) to replace it, or convert into another --out/--variant")
        _LOG.info("replacing the conversion in %s (overwrite): %s", path, "; ".join(changed))
    with_alpha = images_with_alpha(pairs)
    if with_alpha:
        _LOG.warning("%d of %d images have an alpha channel (first: %s); it is dropped: images are stored as RGB",
                     len(with_alpha), len(pairs), with_alpha[0])
    if not splits["validation"]:
        _LOG.info("no validation split: %s", "val_fraction is 0" if val_fraction == 0 else
                  f"{len(pairs)} image(s) cannot be split at val_fraction {val_fraction}")
    with tfds_format.quiet_preparation():
        builder = FolderBuilder(splits=splits, num_classes=num_classes, class_names=names,
                                ignore_index=ignore_index, record=record, intensity=scaling,
                                data_dir=os.path.expanduser(out),
                                config=tfds.core.BuilderConfig(name=variant), file_format="array_record")
        with _set_aside(path, keep=old is None):
            tfds_format.build(builder)
    if old is not None:
        _remove_derived(out, variant)
    return Conversion(path, _split_sizes(splits), written=True)


def intensity_option(intensity: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The checked intensity scaling of the `intensity` option (None, or a mapping with method, low, high)."""
    if not intensity:
        return None
    intensity = dict(intensity.to_dict() if hasattr(intensity, "to_dict") else intensity)
    unknown = sorted(set(intensity) - {"method", "low", "high"})
    if unknown:
        raise FolderDatasetError(f"unknown intensity option(s) {', '.join(unknown)}; valid: method, low, high")
    return intensity_scaling(intensity.get("method"), intensity.get("low"), intensity.get("high"))


def stored_intensity(path: str) -> dict[str, Any] | None:
    """The intensity scaling recorded in the converted dataset directory `path` (`dataset_dir`): what
    `image_files.read_image` must apply to new images; None when none was set, or `path` holds no conversion."""
    return (folder_record.stored_record(path) or {}).get("intensity")


def check_config(path: str, *, num_classes: int | None, class_names: Sequence[str] | None,
                 sources: dict[str, Any] | None = None) -> None:
    """Refuses a data config whose `data.folder` settings disagree with the conversion stored in `path`.

    Args:
        path: a converted dataset directory (`dataset_dir`).
        num_classes, class_names: `data.folder.num_classes` / `class_names`; None = not set, not compared.
        sources: when `data.folder.images`/`labels` are set, the other conversion arguments (keys `images`,
            `labels`, `instances`, `val_fraction`, `seed`, optional `ignore_index` and `intensity`), compared with the
            stored record (`intensity` only when set);
            the source fingerprint only where the directories exist (a copied dataset needs no sources).
    Raises:
        ConversionMismatchError: naming each field that differs, stored value → configured value.
    """
    with open(os.path.join(path, "metadata.json")) as f:
        metadata = json.load(f)
    stored = {"num_classes": len(metadata["class_names"]), "class_names": metadata["class_names"],
              **(metadata.get("conversion") or {})}
    asked: dict[str, Any] = {"num_classes": num_classes, "class_names": class_names}
    if sources and metadata.get("conversion"):
        asked.update(val_fraction=float(sources["val_fraction"]), seed=int(sources["seed"]),
                     instances=bool(sources["instances"]),
                     ignore_index=int(sources.get("ignore_index", label_rules.STORED_IGNORE)),
                     intensity=intensity_option(sources.get("intensity")))
        if all(os.path.isdir(os.path.expanduser(sources[key])) for key in ("images", "labels")):
            pairs = pair_files(sources["images"], sources["labels"], sources["instances"])
            asked.update(folder_record.source_fields(pairs=pairs, images=sources["images"],
                                                     labels=sources["labels"], instances=sources["instances"]))
    fields = [field for field in folder_record.IDENTITY_FIELDS if asked.get(field) not in (None, ())]
    changed = folder_record.differences(stored, asked, fields)
    if changed:
        raise ConversionMismatchError(
            f"data.folder settings disagree with the converted dataset in {path} (stored → config): "
            f"{'; '.join(changed)}. Change the config, or re-convert with "
            f"`python -m seg_jax.data.folder ... --overwrite`")


def load_builder(data_dir: str, variant: str = "default") -> tfds.core.DatasetBuilder:
    """The read-only builder of a converted folder dataset; clear error when there is none."""
    path = dataset_dir(data_dir, variant)
    if not os.path.isfile(os.path.join(path, "dataset_info.json")):
        raise FileNotFoundError(
            f"no converted folder dataset in {path!r}; run `python -m seg_jax.data.folder --images DIR "
            f"--labels DIR --num_classes N --out {data_dir}` or set data.folder.images/labels/num_classes")
    return tfds.builder_from_directory(path)
