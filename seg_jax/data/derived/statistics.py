"""Class statistics of labelled examples: pixel counts per class and class weights from those counts.

Pure functions of examples and arrays; caching the counts of a dataset's split (on disk beside its TFDS
files, and in memory) is the catalog's job (`catalog.Dataset.class_pixel_counts`).
"""
from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import grain
import numpy as np

from seg_jax import labels

WEIGHT_METHODS = ("inverse_frequency", "median_frequency")


def label_counts(label: np.ndarray, *, num_classes: int, where: str) -> np.ndarray:
    """Labelled pixels per class of one label map int [H, W], int64 [N]; `STORED_IGNORE` pixels not counted.

    Raises:
        LabelError: a value outside [0, num_classes) that is not the ignore value (the message names `where`).
    """
    label = np.asarray(label)
    labels.check_label_range(label, num_classes=num_classes, ignore_index=labels.STORED_IGNORE, where=where)
    return np.bincount(label[label != labels.STORED_IGNORE].ravel(), minlength=num_classes).astype(np.int64)


def _example_counts(example: Mapping[str, Any], *, num_classes: int) -> np.ndarray:
    return label_counts(example["label"], num_classes=num_classes, where=f"example {example.get('id')!r}")


def count_labels(examples: Sequence[Mapping[str, Any]], *, num_classes: int, num_threads: int) -> np.ndarray:
    """Labelled pixels per class over random-access examples with `label` int [H, W], int64 [N]
    (`STORED_IGNORE` pixels not counted).

    One pass with `num_threads` grain reader threads (at least 1).
    """
    ds = grain.MapDataset.source(examples).map(functools.partial(_example_counts, num_classes=num_classes))
    threads = max(num_threads, 1)
    counts = np.zeros(num_classes, np.int64)
    for example_counts in ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=threads)):
        counts += example_counts
    return counts


def class_weights_from_counts(counts: Any, *, method: str) -> np.ndarray:
    """Per-class loss weights, float32 [N], from pixel counts [N].

    With f_c = n_c / sum(n) over the K classes present (n_c > 0):
        "inverse_frequency": w_c = 1 / (K f_c). Normalised so that the mean weight per labelled
            pixel, sum_c f_c w_c, is 1 (the loss keeps its scale) and every present class carries
            the same total weight 1 / K.
        "median_frequency": w_c = median(f) / f_c (Eigen & Fergus), median over present classes,
            so the median class gets weight 1.
    A class with no pixels gets weight 0 (it adds no pixels to the loss; never inf or NaN).

    Raises:
        ValueError: unknown method, negative counts, or no labelled pixel at all.
    """
    counts = np.asarray(counts, np.float64)
    if method not in WEIGHT_METHODS:
        raise ValueError(f"unknown class weight method {method!r}; valid methods: {', '.join(WEIGHT_METHODS)}")
    if (counts < 0).any() or counts.sum() <= 0:
        raise ValueError(f"class pixel counts must be >= 0 with a positive total, got {counts.tolist()}")
    present = counts > 0
    frequency = counts / counts.sum()
    weights = np.zeros_like(frequency)
    if method == "inverse_frequency":
        weights[present] = 1.0 / (present.sum() * frequency[present])
    else:
        weights[present] = np.median(frequency[present]) / frequency[present]
    return weights.astype(np.float32)
