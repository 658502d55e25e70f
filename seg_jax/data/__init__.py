"""The data stage: TFDS datasets (array_record, read without TensorFlow) fed through grain.

Modules, in pipeline order: `tfds_format` (stored and canonical example formats), `procedural`,
`shapes`, `nuclei`, `folder_dataset` (+ CLI `python -m seg_jax.data.folder`), `public`
(oxford_iiit_pet, cityscapes), `targets` (U-Net weight maps, border-aware targets), `stored_targets`
(those targets precomputed into a derived TFDS dataset), `datasets` (registry, prepare, get_source),
`config`, `augment`, `pipeline` (train/eval batches), `class_balance`.
"""
from __future__ import annotations

from seg_jax.data.class_balance import class_pixel_counts, class_weights_from_counts
from seg_jax.data.config import base_config
from seg_jax.data.datasets import DATASETS, DatasetInfo, DatasetSpec, class_names, get_source, prepare
from seg_jax.data.pipeline import denormalize, eval_batches, train_batches

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DatasetSpec",
    "base_config",
    "class_names",
    "class_pixel_counts",
    "class_weights_from_counts",
    "denormalize",
    "eval_batches",
    "get_source",
    "prepare",
    "train_batches",
]
