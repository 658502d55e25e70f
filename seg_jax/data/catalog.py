"""What a dataset is: the registry `DATASETS` and `resolve(data_cfg) -> Dataset`, a data config resolved once.

A `DatasetSpec` says how to get a prepared TFDS builder for a data config and how to map its examples to
the canonical example (`sources.tfds_format`). A config asking for targets derived from instance ids
(`data.targets`, `data.weight_map`) reads the derived dataset that `derived.stored_targets` writes next to
the base one. `resolve` loads the builder once; the `Dataset` it returns holds everything derived from it
(split sources, class pixel counts), so nothing downstream resolves the config again.
Per-dataset config defaults live in the light `config.DATASET_DEFAULTS`.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from typing import Any, Callable, Mapping

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from seg_jax.data.derived import statistics, stored_targets
from seg_jax.data.derived.targets import BORDER_CLASS_NAMES
from seg_jax.data.sources import folder_importer, nuclei, procedural, public, shapes, tfds_format
from seg_jax.registry import Registry

# Version of the `label_statistics.<split>.json` caches; a cache of another format is recomputed.
# (Format 1 was `class_pixel_counts.<split>.json`, pixel counts only; it is no longer read.)
STATISTICS_FORMAT = 2


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How one registered dataset is found, built and mapped.

    Attributes:
        load_builder: data config -> prepared TFDS builder (writes its files first if missing).
        to_canonical: decoded TFDS example -> canonical example; module-level, so it pickles.
        class_names: fixed class names, or None to read them from the builder's metadata.
        has_instances: whether examples carry instance ids; None when only the prepared files tell.
        versions: builder versions `data.version` may name, the default first; () = not selectable (the
            version must stay None).
    """

    load_builder: Callable[[ml_collections.ConfigDict], tfds.core.DatasetBuilder]
    to_canonical: Callable[[Mapping[str, Any]], dict[str, Any]]
    class_names: tuple[str, ...] | None = None
    has_instances: bool | None = None
    versions: tuple[str, ...] = ()


def _versions(builder_cls: type[tfds.core.DatasetBuilder]) -> tuple[str, ...]:
    """The versions a builder class can write, its default (`VERSION`) first."""
    return tuple(str(v) for v in [builder_cls.VERSION, *builder_cls.SUPPORTED_VERSIONS])


def _load_procedural(builder_cls: type[procedural.ProceduralBuilder],
                     data_cfg: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    variants = [config.name for config in builder_cls.BUILDER_CONFIGS]
    if data_cfg.variant not in variants:
        raise KeyError(f"unknown data.variant {data_cfg.variant!r} for dataset {data_cfg.name!r}; "
                       f"valid variants: {', '.join(variants)}")
    builder = builder_cls(data_dir=os.path.expanduser(data_cfg.data_dir), config=data_cfg.variant,
                          version=data_cfg.get("version", None), file_format="array_record")
    if not builder.is_prepared():
        tfds_format.build(builder)
    return builder


def _load_folder(data_cfg: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    """Converts `data.folder` on first use; an existing conversion must agree with the `data.folder`
    settings that are set (`folder_importer.check_config`)."""
    folder = data_cfg.folder
    path = folder_importer.dataset_dir(data_cfg.data_dir, data_cfg.variant)
    has_sources = bool(folder.images and folder.labels)
    if not os.path.isdir(path) and has_sources:
        if folder.num_classes is None:
            raise ValueError("data.folder.num_classes must be set to convert data.folder.images/labels")
        folder_importer.convert_folder(
            images=folder.images, labels=folder.labels, instances=folder.instances,
            num_classes=folder.num_classes, class_names=folder.class_names, out=data_cfg.data_dir,
            val_fraction=folder.val_fraction, seed=folder.seed, variant=data_cfg.variant,
            intensity=_intensity(folder))
    builder = folder_importer.load_builder(data_cfg.data_dir, data_cfg.variant)
    sources = dict(images=folder.images, labels=folder.labels, instances=folder.instances,
                   val_fraction=folder.val_fraction, seed=folder.seed, intensity=_intensity(folder))
    folder_importer.check_config(path, num_classes=folder.num_classes, class_names=folder.class_names,
                                 sources=sources if has_sources else None)
    return builder


def _intensity(folder: Any) -> dict[str, Any] | None:
    """`data.folder.intensity` as the converter's option (None when its method is unset; configs saved before the
    option existed have none)."""
    intensity = folder.get("intensity", None) or {}
    values = {key: intensity.get(key, None) for key in ("method", "low", "high")}
    return values if any(value is not None for value in values.values()) else None


def _load_public(name: str, data_cfg: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    return public.load_builder(name, data_dir=data_cfg.data_dir, manual_dir=data_cfg.cityscapes_manual_dir)


DATASETS: Registry[DatasetSpec] = Registry("dataset")
DATASETS.register("shapes")(DatasetSpec(
    load_builder=functools.partial(_load_procedural, shapes.ShapesBuilder),
    to_canonical=tfds_format.stored_to_canonical, class_names=shapes.CLASS_NAMES, has_instances=True,
    versions=_versions(shapes.ShapesBuilder)))
DATASETS.register("nuclei")(DatasetSpec(
    load_builder=functools.partial(_load_procedural, nuclei.NucleiBuilder),
    to_canonical=tfds_format.stored_to_canonical, class_names=nuclei.CLASS_NAMES, has_instances=True,
    versions=_versions(nuclei.NucleiBuilder)))
DATASETS.register("folder")(DatasetSpec(load_builder=_load_folder, to_canonical=tfds_format.stored_to_canonical))
DATASETS.register("oxford_iiit_pet")(DatasetSpec(
    load_builder=functools.partial(_load_public, "oxford_iiit_pet"),
    to_canonical=public.pet_to_canonical, class_names=public.PET_CLASS_NAMES, has_instances=False))
DATASETS.register("cityscapes")(DatasetSpec(
    load_builder=functools.partial(_load_public, "cityscapes"),
    to_canonical=public.cityscapes_to_canonical, class_names=public.CITYSCAPES_CLASS_NAMES, has_instances=False))


def _check_instances(data_cfg: ml_collections.ConfigDict, choice: stored_targets.TargetChoice,
                     has_instances: bool | None) -> None:
    """One clear error when targets derived from instance ids are asked of a dataset without them."""
    if not choice.derived or has_instances is not False:
        return
    asked = " and ".join(f"data.{field}={value!r}" for field, value, used in (
        ("targets", choice.targets, choice.targets != "semantic"), ("weight_map", choice.weight_map, choice.weight_map),
        ("distance_target", choice.distance, choice.distance)) if used)
    where = f" (variant {data_cfg.variant!r} in {data_cfg.data_dir})" if data_cfg.name == "folder" else ""
    with_instances = sorted(name for name in DATASETS.names() if DATASETS.get(name).has_instances)
    raise ValueError(
        f"dataset {data_cfg.name!r}{where} has no instance ids, which {asked} needs; datasets with instances: "
        f"{', '.join(with_instances)}, and folder converted with instance maps (--instances / data.folder.instances)")


def _check_version(data_cfg: ml_collections.ConfigDict, spec: DatasetSpec) -> None:
    """One clear error for a `data.version` the dataset's builder cannot write (None = its default)."""
    version = data_cfg.get("version", None)
    if version is None or version in spec.versions:
        return
    if not spec.versions:
        raise KeyError(f"data.version applies to the procedural datasets only; dataset {data_cfg.name!r} has one "
                       f"version, leave data.version unset (None), got {version!r}")
    valid = ", ".join([f"{spec.versions[0]} (the default)", *spec.versions[1:]])
    raise KeyError(f"unknown data.version {version!r} for dataset {data_cfg.name!r}; valid versions: {valid}")


def _trained_class_names(spec: DatasetSpec, choice: stored_targets.TargetChoice,
                         builder: tfds.core.DatasetBuilder | None) -> tuple[str, ...]:
    """Class names of the targets trained on; () when only the builder's metadata (not given) knows them."""
    if choice.targets == "border":
        return BORDER_CLASS_NAMES
    if spec.class_names:
        return tuple(spec.class_names)
    return tuple(builder.info.metadata["class_names"]) if builder is not None else ()


def class_names(data_cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The class names of the targets `data_cfg` trains on, known without touching its files
    ("background", "interior", "border" for `data.targets = "border"`).

    Raises:
        ValueError: as `resolve`, as far as it is known without files; a folder dataset without
            `data.folder.num_classes` (semantic targets).
    """
    spec = DATASETS.get(data_cfg.name)
    _check_version(data_cfg, spec)
    choice = stored_targets.choice_from_config(data_cfg)
    _check_instances(data_cfg, choice, spec.has_instances)
    names = _trained_class_names(spec, choice, None)
    if names:
        return names
    folder = data_cfg.folder
    if folder.num_classes is None:
        raise ValueError(f"dataset {data_cfg.name!r} needs config.data.folder.num_classes")
    return tuple(folder.class_names or (f"class_{i}" for i in range(folder.num_classes)))


class Dataset:
    """A data config resolved once: its prepared builder and everything derived from it.

    Attributes:
        config: the data config it was resolved from, frozen (`ml_collections.FrozenConfigDict`); a changed
            copy: `ds.config.as_configdict().copy_and_resolve_references()`, then `resolve` that.
        name: the registered dataset name (`config.name`).
        num_classes, class_names: those of the targets trained on (3 border classes for `targets = "border"`).
        ignore_index: the label value batches use for ignored pixels (`config.ignore_index`; stored data
            uses `labels.STORED_IGNORE`).
        split_sizes: examples per TFDS split, e.g. {"train": 24, "validation": 8, "test": 8}.
        has_instances: whether examples carry instance ids.
        version: the builder version read, e.g. "2.0.0" (`config.version`, or the builder's default).
        directory: the prepared TFDS directory read (`<data_dir>/<builder>/<config>/<version>`); the label
            statistics (class pixel counts) are cached there.
    """

    def __init__(self, *, config: ml_collections.FrozenConfigDict, spec: DatasetSpec,
                 choice: stored_targets.TargetChoice, builder: tfds.core.DatasetBuilder):
        self.config = config
        self.name = str(config.name)
        self.class_names = _trained_class_names(spec, choice, builder)
        self.num_classes = len(self.class_names)
        self.ignore_index = int(config.ignore_index)
        self.split_sizes = {name: split.num_examples for name, split in builder.info.splits.items()}
        self.has_instances = "instances" in builder.info.features
        self.version = str(builder.version)
        self.directory = os.fspath(builder.data_dir)
        self._builder = builder
        self._to_canonical = stored_targets.to_canonical(choice) if choice.derived else spec.to_canonical
        self._sources: dict[str, tfds_format.CanonicalSource] = {}
        self._statistics: dict[str, statistics.LabelStatistics] = {}
        self._max_sizes: dict[str, tuple[int, int]] = {}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{split} {size}" for split, size in self.split_sizes.items())
        return (f"Dataset({self.name!r}, variant={self.config.variant!r}, version={self.version!r}, "
                f"{self.num_classes} classes; {sizes})")

    def source(self, split: str) -> tfds_format.CanonicalSource:
        """Random-access canonical examples of `split` (a TFDS split; "train[:90%]", "train+validation" work).

        Each item: image uint8 [H, W, 3], label int32 [H, W] (the targets trained on; `labels.STORED_IGNORE`
        = ignore), optional instances int32 [H, W] and weights float32 [H, W], id str. Cached per split.

        Raises:
            KeyError: a split the dataset does not have (the message lists the available ones).
        """
        if split not in self._sources:
            named = {part.split("[")[0].strip() for part in split.split("+")}
            if not named <= set(self.split_sizes):
                conversion = self._builder.info.metadata.get("conversion") if self.name == "folder" else None
                images = sum(self.split_sizes.values())
                why = (f" (converted with val_fraction {conversion['val_fraction']} from {images} image(s): no "
                       "validation split; evaluate on another split, or convert at least 2 images with a "
                       "val_fraction above 0)") if conversion and "validation" in named else ""
                if self.name == "nuclei" and nuclei.SHIFTED_SPLIT in named:
                    why = (f" (version {self.version}; the {nuclei.SHIFTED_SPLIT!r} split is in version 2.0.0: "
                           "set data.version=2.0.0)")
                raise KeyError(f"split {split!r} not in dataset {self.name!r}; "
                               f"available splits: {', '.join(sorted(self.split_sizes))}{why}")
            self._sources[split] = tfds_format.CanonicalSource(
                self._builder.as_data_source(split=split), self._to_canonical,
                cache_bytes=int(float(self.config.get("cache_mb", 0)) * 2**20))
        return self._sources[split]

    def class_pixel_counts(self, split: str | None = None) -> np.ndarray:
        """Labelled pixels per trained class in `split` (default `config.train_split`), int64 [N];
        ignored pixels not counted. `label_statistics(split).pixel_counts`, a copy."""
        return self.label_statistics(split).pixel_counts.copy()

    def label_statistics(self, split: str | None = None) -> statistics.LabelStatistics:
        """Per-class label statistics of `split` (default `config.train_split`): pixel counts and the labelled
        pixels of the images where each class is present (`derived.statistics.LabelStatistics`).

        One pass over the split (grain reader threads), cached in memory and as
        `label_statistics.<split>.json` (format `STATISTICS_FORMAT`) in `directory`, read from there next time.
        Callers get copies of the arrays.
        """
        split = self.config.train_split if split is None else split
        if split not in self._statistics:
            self._statistics[split] = self._cached_statistics(split)
        cached = self._statistics[split]
        return statistics.LabelStatistics(*(getattr(cached, f.name).copy() for f in dataclasses.fields(cached)))

    def max_image_size(self, split: str) -> tuple[int, int]:
        """(largest height, largest width) in px of the images of `split`: what eval batches pad the native-size
        labels to (`data.eval_size`). One pass over the split, cached in memory and as `image_sizes.<split>.json`
        (format `STATISTICS_FORMAT`) in `directory`."""
        if split not in self._max_sizes:
            path = os.path.join(self.directory, f"image_sizes.{_safe(split)}.json")
            cached = _read_json(path)
            if cached.get("format") == STATISTICS_FORMAT and cached.get("split") == split:
                self._max_sizes[split] = (int(cached["max_height"]), int(cached["max_width"]))
            else:
                self._max_sizes[split] = statistics.max_image_size(self.source(split),
                                                                   num_threads=int(self.config.prefetch))
                _write_json(path, {"format": STATISTICS_FORMAT, "split": split,
                                   "max_height": self._max_sizes[split][0], "max_width": self._max_sizes[split][1]})
        return self._max_sizes[split]

    def class_weights(self, method: str, split: str | None = None) -> np.ndarray:
        """Per-class loss weights float32 [N] from `label_statistics(split)`; `method` one of
        `derived.statistics.WEIGHT_METHODS` ("inverse_frequency", "median_frequency" (Eigen & Fergus),
        "median_global_frequency"; `derived.statistics.class_weights_from_counts`)."""
        return statistics.class_weights(self.label_statistics(split), method=method)

    def _cached_statistics(self, split: str) -> statistics.LabelStatistics:
        path = os.path.join(self.directory, f"label_statistics.{_safe(split)}.json")
        fields = [field.name for field in dataclasses.fields(statistics.LabelStatistics)]
        cached = _read_json(path)
        if (cached.get("format") == STATISTICS_FORMAT and cached.get("split") == split
                and all(len(cached.get(name, ())) == self.num_classes for name in fields)):
            return statistics.LabelStatistics(*(np.asarray(cached[name], np.int64) for name in fields))
        stats = statistics.label_statistics(self.source(split), num_classes=self.num_classes,
                                            num_threads=int(self.config.prefetch))
        _write_json(path, {"format": STATISTICS_FORMAT, "split": split, "class_names": list(self.class_names),
                           **{name: getattr(stats, name).tolist() for name in fields}})
        return stats


def _safe(split: str) -> str:
    return re.sub(r"[^\w.-]+", "_", split)


def _read_json(path: str) -> dict:
    """The JSON object cached at `path`, {} when there is none."""
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _write_json(path: str, value: dict) -> None:
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w") as f:
        json.dump(value, f)
    os.replace(temporary, path)  # atomic: a concurrent reader never sees half a file


def resolve(data_cfg: ml_collections.ConfigDict) -> Dataset:
    """The `Dataset` of `data_cfg`: its TFDS files are written first if missing (idempotent), and its
    builder is loaded once, here (the dataset's own, or the derived one holding targets computed from
    instance ids, `derived.stored_targets`).

    Raises:
        KeyError: unknown `data_cfg.name`, `data_cfg.variant` or `data_cfg.version` (the message lists valid
            ones).
        ValueError: invalid `data.targets` / `data.weight_map` values, or targets derived from instance
            ids asked of a dataset without them (the message names the dataset).
        FileNotFoundError: a folder dataset that is not converted and has no `data.folder` sources.
    """
    config = data_cfg if isinstance(data_cfg, ml_collections.FrozenConfigDict) else (
        ml_collections.FrozenConfigDict(data_cfg.copy_and_resolve_references()))  # private: callers may change theirs
    spec = DATASETS.get(config.name)
    _check_version(config, spec)
    choice = stored_targets.choice_from_config(config)
    _check_instances(config, choice, spec.has_instances)  # before a public dataset downloads itself
    builder = spec.load_builder(config)
    if choice.derived:
        _check_instances(config, choice, "instances" in builder.info.features)
        builder = stored_targets.load_builder(builder, choice=choice, variant=config.variant,
                                              data_dir=config.data_dir, num_threads=int(config.prefetch))
    return Dataset(config=config, spec=spec, choice=choice, builder=builder)
