"""The data stage: TFDS datasets (array_record, read without TensorFlow) fed through grain.

Layers, in the order data flows:
    sources/    stored and canonical example formats (`tfds_format`) and the datasets themselves:
                `procedural`, `shapes`, `nuclei` (versions 1.0.0 and `nuclei_v2`, shared `nuclei_geometry`;
                CLI `python -m seg_jax.data.nuclei_stats` draws their statistics), `folder_importer`
                (+ CLI `python -m seg_jax.data.folder`), `public` (oxford_iiit_pet, cityscapes)
    catalog     the registry `DATASETS` and `resolve(data_cfg) -> Dataset`: a data config resolved once
    derived/    offline targets and statistics: `targets` (U-Net weight maps, border targets),
                `stored_targets` (those targets stored in a derived TFDS dataset), `statistics` (class counts, weights),
                `instance_statistics` (intensities, object areas, touching, SNR of instance datasets)
    checks      `check_dataset`: a scan of splits for label and example defects, the same checks training runs
    pipeline/   online: `augment` (crops, flips), `warp` (rotation, elastic), `photometric`, `policy` (the
                training augmentation of `config.data.augment`: its order and draws), `batches` (train/eval
                batches), `detection_targets` (a per-example map step)
    config      `base_config(name)`: every data key with its default (imports neither TFDS nor grain)

Public names are imported on first use (PEP 562), so `from seg_jax import data; data.base_config(...)`
builds configs without loading TFDS or grain.
"""
from __future__ import annotations

from seg_jax.lazy import exports

_PUBLIC = {
    "DATASETS": "seg_jax.data.catalog",
    "Dataset": "seg_jax.data.catalog",
    "DatasetSpec": "seg_jax.data.catalog",
    "class_names": "seg_jax.data.catalog",
    "resolve": "seg_jax.data.catalog",
    "base_config": "seg_jax.data.config",
    "DataError": "seg_jax.data.checks",
    "DataReport": "seg_jax.data.checks",
    "check_dataset": "seg_jax.data.checks",
    "class_weights_from_counts": "seg_jax.data.derived.statistics",
    "denormalize": "seg_jax.data.pipeline.batches",
    "eval_batches": "seg_jax.data.pipeline.batches",
    "train_batches": "seg_jax.data.pipeline.batches",
    "DetectionTargets": "seg_jax.data.pipeline.detection_targets",
    "batched_instances_to_targets": "seg_jax.data.pipeline.detection_targets",
    "instances_to_targets": "seg_jax.data.pipeline.detection_targets",
}

__getattr__, __dir__, __all__ = exports(__name__, _PUBLIC)
