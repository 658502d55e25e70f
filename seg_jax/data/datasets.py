"""The dataset registry `DATASETS`, `prepare` and `get_source`: from a data config to canonical examples.

A `DatasetSpec` says how to get a prepared TFDS builder for a data config, how to map its examples
to the canonical example (`tfds_format`), and which config defaults suit the dataset.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Mapping

import ml_collections
import tensorflow_datasets as tfds

from seg_jax.data import folder_dataset, nuclei, procedural, public, shapes, tfds_format
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
        defaults: `base_config` values that differ from the generic ones for this dataset.
    """

    load_builder: Callable[[ml_collections.ConfigDict], tfds.core.DatasetBuilder]
    to_canonical: Callable[[Mapping[str, Any]], dict[str, Any]]
    class_names: tuple[str, ...] | None = None
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
    defaults=dict(crop_size=(96, 96), scale_range=(0.75, 1.5))))
DATASETS.register("nuclei")(DatasetSpec(
    load_builder=functools.partial(_load_procedural, nuclei.NucleiBuilder),
    to_canonical=tfds_format.stored_to_canonical,
    class_names=nuclei.CLASS_NAMES,
    defaults=dict(crop_size=(96, 96), scale_range=(0.75, 1.5))))
DATASETS.register("folder")(DatasetSpec(
    load_builder=_load_folder,
    to_canonical=tfds_format.stored_to_canonical,
    defaults=dict(crop_size=(256, 256), scale_range=(0.5, 2.0))))
DATASETS.register("oxford_iiit_pet")(DatasetSpec(
    load_builder=functools.partial(_load_public, "oxford_iiit_pet"),
    to_canonical=public.pet_to_canonical,
    class_names=public.PET_CLASS_NAMES,
    defaults=dict(eval_split="test", crop_size=(256, 256), scale_range=(0.5, 1.5), eval_size=(512, 512))))
DATASETS.register("cityscapes")(DatasetSpec(
    load_builder=functools.partial(_load_public, "cityscapes"),
    to_canonical=public.cityscapes_to_canonical,
    class_names=public.CITYSCAPES_CLASS_NAMES,
    defaults=dict(crop_size=(512, 1024), scale_range=(0.5, 2.0))))


def load_builder(data_cfg: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    """The prepared TFDS builder of `data_cfg.name` (files are written first if missing)."""
    return DATASETS.get(data_cfg.name).load_builder(data_cfg)


def class_names(data_cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The class names of `data_cfg`'s dataset, known without touching its files."""
    names = DATASETS.get(data_cfg.name).class_names
    if names:
        return tuple(names)
    folder = data_cfg.folder
    if folder.num_classes is None:
        raise ValueError(f"dataset {data_cfg.name!r} needs config.data.folder.num_classes")
    return tuple(folder.class_names or (f"class_{i}" for i in range(folder.num_classes)))


def prepare(data_cfg: ml_collections.ConfigDict) -> DatasetInfo:
    """Builds the dataset's TFDS files if missing (idempotent) and describes it.

    Raises:
        KeyError: unknown `data_cfg.name` or `data_cfg.variant` (the message lists valid ones).
    """
    spec = DATASETS.get(data_cfg.name)
    builder = spec.load_builder(data_cfg)
    class_names = spec.class_names or tuple(builder.info.metadata["class_names"])
    return DatasetInfo(
        name=data_cfg.name,
        num_classes=len(class_names),
        class_names=tuple(class_names),
        ignore_index=int(data_cfg.ignore_index),
        split_sizes={name: split.num_examples for name, split in builder.info.splits.items()},
        has_instances="instances" in builder.info.features,
    )


def get_source(data_cfg: ml_collections.ConfigDict, split: str) -> tfds_format.CanonicalSource:
    """Random-access canonical examples of `split` (a TFDS split; "train[:90%]", "train+validation" work).

    Each item: image uint8 [H, W, 3], label int32 [H, W] (255 = ignore), optional instances int32
    [H, W] and weights float32 [H, W], id str. Prepares the dataset first if needed.
    """
    spec = DATASETS.get(data_cfg.name)
    builder = spec.load_builder(data_cfg)
    named = {part.split("[")[0].strip() for part in split.split("+")}
    if not named <= set(builder.info.splits):
        raise KeyError(f"split {split!r} not in dataset {data_cfg.name!r}; "
                       f"available splits: {', '.join(sorted(builder.info.splits))}")
    return tfds_format.CanonicalSource(builder.as_data_source(split=split), spec.to_canonical)
