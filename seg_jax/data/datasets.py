"""The dataset registry `DATASETS`, `prepare` and `get_source`: from a data config to canonical examples.

A `DatasetSpec` says how to get a prepared TFDS builder for a data config, how to map its examples
to the canonical example (`tfds_format`), and which config defaults suit the dataset. A config asking
for targets derived from instance ids (`data.targets`, `data.weight_map`) reads the derived dataset
that `stored_targets` writes next to the base one.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Mapping

import ml_collections
import tensorflow_datasets as tfds

from seg_jax.data import folder_dataset, nuclei, procedural, public, shapes, stored_targets, tfds_format
from seg_jax.data.targets import BORDER_CLASS_NAMES
from seg_jax.registry import Registry


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the rest of seg_jax needs to know about a prepared dataset."""

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    ignore_index: int
    split_sizes: dict[str, int]
    has_instances: bool


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How one registered dataset is found, built and mapped.

    Attributes:
        load_builder: data config -> prepared TFDS builder (writes its files first if missing).
        to_canonical: decoded TFDS example -> canonical example; module-level, so it pickles.
        class_names: fixed class names, or None to read them from the builder's metadata.
        has_instances: whether examples carry instance ids; None when only the prepared files tell.
        defaults: `base_config` values that differ from the generic ones for this dataset.
    """

    load_builder: Callable[[ml_collections.ConfigDict], tfds.core.DatasetBuilder]
    to_canonical: Callable[[Mapping[str, Any]], dict[str, Any]]
    class_names: tuple[str, ...] | None = None
    has_instances: bool | None = None
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _load_procedural(builder_cls: type[procedural.ProceduralBuilder],
                     data_cfg: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    variants = [config.name for config in builder_cls.BUILDER_CONFIGS]
    if data_cfg.variant not in variants:
        raise KeyError(f"unknown data.variant {data_cfg.variant!r} for dataset {data_cfg.name!r}; "
                       f"valid variants: {', '.join(variants)}")
    builder = builder_cls(data_dir=os.path.expanduser(data_cfg.data_dir), config=data_cfg.variant,
                          file_format="array_record")
    if not builder.is_prepared():
        tfds_format.build(builder)
    return builder


def _load_folder(data_cfg: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    folder = data_cfg.folder
    path = folder_dataset.dataset_dir(data_cfg.data_dir, data_cfg.variant)
    if not os.path.isdir(path) and folder.images and folder.labels:
        if folder.num_classes is None:
            raise ValueError("data.folder.num_classes must be set to convert data.folder.images/labels")
        folder_dataset.convert_folder(
            images=folder.images, labels=folder.labels, instances=folder.instances,
            num_classes=folder.num_classes, class_names=folder.class_names, out=data_cfg.data_dir,
            val_fraction=folder.val_fraction, seed=folder.seed, variant=data_cfg.variant)
    return folder_dataset.load_builder(data_cfg.data_dir, data_cfg.variant)


def _load_public(name: str, data_cfg: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    return public.load_builder(name, data_dir=data_cfg.data_dir, manual_dir=data_cfg.cityscapes_manual_dir)


DATASETS: Registry[DatasetSpec] = Registry("dataset")
DATASETS.register("shapes")(DatasetSpec(
    load_builder=functools.partial(_load_procedural, shapes.ShapesBuilder),
    to_canonical=tfds_format.stored_to_canonical,
    class_names=shapes.CLASS_NAMES,
    has_instances=True,
    defaults=dict(crop_size=(96, 96), scale_range=(0.75, 1.5))))
DATASETS.register("nuclei")(DatasetSpec(
    load_builder=functools.partial(_load_procedural, nuclei.NucleiBuilder),
    to_canonical=tfds_format.stored_to_canonical,
    class_names=nuclei.CLASS_NAMES,
    has_instances=True,
    defaults=dict(crop_size=(96, 96), scale_range=(0.75, 1.5))))
DATASETS.register("folder")(DatasetSpec(
    load_builder=_load_folder,
    to_canonical=tfds_format.stored_to_canonical,
    defaults=dict(crop_size=(256, 256), scale_range=(0.5, 2.0))))
DATASETS.register("oxford_iiit_pet")(DatasetSpec(
    load_builder=functools.partial(_load_public, "oxford_iiit_pet"),
    to_canonical=public.pet_to_canonical,
    class_names=public.PET_CLASS_NAMES,
    has_instances=False,
    defaults=dict(eval_split="test", crop_size=(256, 256), scale_range=(0.5, 1.5), eval_size=(512, 512))))
DATASETS.register("cityscapes")(DatasetSpec(
    load_builder=functools.partial(_load_public, "cityscapes"),
    to_canonical=public.cityscapes_to_canonical,
    class_names=public.CITYSCAPES_CLASS_NAMES,
    has_instances=False,
    defaults=dict(crop_size=(512, 1024), scale_range=(0.5, 2.0))))


def _check_instances(data_cfg: ml_collections.ConfigDict, choice: stored_targets.TargetChoice,
                     has_instances: bool | None) -> None:
    """One clear error when targets derived from instance ids are asked of a dataset without them."""
    if not choice.derived or has_instances is not False:
        return
    asked = f"data.targets={choice.targets!r}" if choice.targets != "semantic" else ""
    asked += (" and " if asked else "") + (f"data.weight_map={choice.weight_map!r}" if choice.weight_map else "")
    where = f" (variant {data_cfg.variant!r} in {data_cfg.data_dir})" if data_cfg.name == "folder" else ""
    with_instances = sorted(name for name in DATASETS.names() if DATASETS.get(name).has_instances)
    raise ValueError(
        f"dataset {data_cfg.name!r}{where} has no instance ids, which {asked} needs; datasets with instances: "
        f"{', '.join(with_instances)}, and folder converted with instance maps (--instances / data.folder.instances)")


def _trained_class_names(spec: DatasetSpec, choice: stored_targets.TargetChoice,
                         builder: tfds.core.DatasetBuilder | None) -> tuple[str, ...]:
    """Class names of the targets trained on; () when only the builder's metadata (not given) knows them."""
    if choice.targets == "border":
        return BORDER_CLASS_NAMES
    if spec.class_names:
        return tuple(spec.class_names)
    return tuple(builder.info.metadata["class_names"]) if builder is not None else ()


def load_builder(data_cfg: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    """The prepared TFDS builder that `data_cfg` reads (files are written first if missing): its dataset's,
    or the derived one holding targets computed from instance ids (`stored_targets`).

    Raises:
        KeyError: unknown `data_cfg.name` or `data_cfg.variant` (the message lists valid ones).
        ValueError: invalid `data.targets` / `data.weight_map` values, or targets derived from instance
            ids asked of a dataset without them (the message names the dataset).
    """
    spec = DATASETS.get(data_cfg.name)
    choice = stored_targets.choice_from_config(data_cfg)
    _check_instances(data_cfg, choice, spec.has_instances)  # before a public dataset downloads itself
    base = spec.load_builder(data_cfg)
    if not choice.derived:
        return base
    _check_instances(data_cfg, choice, "instances" in base.info.features)
    return stored_targets.load_builder(base, choice=choice, variant=data_cfg.variant, data_dir=data_cfg.data_dir,
                                       num_threads=int(data_cfg.prefetch))


def class_names(data_cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The class names of the targets `data_cfg` trains on, known without touching its files
    ("background", "interior", "border" for `data.targets = "border"`).

    Raises:
        ValueError: as `load_builder`, as far as it is known without files; a folder dataset without
            `data.folder.num_classes` (semantic targets).
    """
    spec = DATASETS.get(data_cfg.name)
    choice = stored_targets.choice_from_config(data_cfg)
    _check_instances(data_cfg, choice, spec.has_instances)
    names = _trained_class_names(spec, choice, None)
    if names:
        return names
    folder = data_cfg.folder
    if folder.num_classes is None:
        raise ValueError(f"dataset {data_cfg.name!r} needs config.data.folder.num_classes")
    return tuple(folder.class_names or (f"class_{i}" for i in range(folder.num_classes)))


def prepare(data_cfg: ml_collections.ConfigDict) -> DatasetInfo:
    """Builds the dataset's TFDS files if missing (idempotent) and describes it; `num_classes` and
    `class_names` are those of the targets trained on.

    Raises:
        KeyError, ValueError: as `load_builder`.
    """
    spec = DATASETS.get(data_cfg.name)
    builder = load_builder(data_cfg)
    choice = stored_targets.choice_from_config(data_cfg)
    names = _trained_class_names(spec, choice, builder)
    return DatasetInfo(
        name=data_cfg.name,
        num_classes=len(names),
        class_names=names,
        ignore_index=int(data_cfg.ignore_index),
        split_sizes={name: split.num_examples for name, split in builder.info.splits.items()},
        has_instances="instances" in builder.info.features,
    )


def get_source(data_cfg: ml_collections.ConfigDict, split: str) -> tfds_format.CanonicalSource:
    """Random-access canonical examples of `split` (a TFDS split; "train[:90%]", "train+validation" work).

    Each item: image uint8 [H, W, 3], label int32 [H, W] (the targets trained on; 255 = ignore), optional
    instances int32 [H, W] and weights float32 [H, W], id str. Prepares the dataset first if needed.
    """
    spec = DATASETS.get(data_cfg.name)
    builder = load_builder(data_cfg)
    choice = stored_targets.choice_from_config(data_cfg)
    named = {part.split("[")[0].strip() for part in split.split("+")}
    if not named <= set(builder.info.splits):
        raise KeyError(f"split {split!r} not in dataset {data_cfg.name!r}; "
                       f"available splits: {', '.join(sorted(builder.info.splits))}")
    to_canonical = stored_targets.to_canonical(choice) if choice.derived else spec.to_canonical
    return tfds_format.CanonicalSource(builder.as_data_source(split=split), to_canonical)
