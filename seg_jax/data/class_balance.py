"""Class pixel counts of a split (cached beside the TFDS files) and class weights derived from them."""
from __future__ import annotations

import functools
import json
import os
import re
from typing import Any, Mapping, Sequence

import grain
import ml_collections
import numpy as np

from seg_jax.data import datasets

WEIGHT_METHODS = ("inverse_frequency", "median_frequency")
_STORED_IGNORE = 255  # canonical examples mark ignored pixels with 255


def _label_counts(example: dict[str, Any], *, num_classes: int) -> np.ndarray:
    label = example["label"]
    valid = label[label != _STORED_IGNORE]
    if valid.size and (valid.min() < 0 or valid.max() >= num_classes):
        raise ValueError(f"example {example.get('id')!r} has label values outside [0, {num_classes}): "
                         f"{np.unique(valid[(valid < 0) | (valid >= num_classes)]).tolist()}")
    return np.bincount(valid.ravel(), minlength=num_classes).astype(np.int64)


def class_pixel_counts(data_cfg: ml_collections.ConfigDict, *, split: str = "train") -> np.ndarray:
    """Labelled pixels per class in `split`, int64 [N] (ignored pixels not counted).

    One pass over the split (grain reader threads), cached as
    `class_pixel_counts.<split>.json` in the dataset's TFDS directory and read from there next time.
    """
    info = datasets.prepare(data_cfg)
    directory = os.fspath(datasets.load_builder(data_cfg).data_dir)
    safe_split = re.sub(r"[^\w.-]+", "_", split)
    path = os.path.join(directory, f"class_pixel_counts.{safe_split}.json")
    if os.path.isfile(path):
        with open(path) as f:
            cached = json.load(f)
        if cached.get("split") == split and len(cached.get("counts", ())) == info.num_classes:
            return np.asarray(cached["counts"], np.int64)
    counts = count_labels(datasets.get_source(data_cfg, split), num_classes=info.num_classes,
                          num_threads=int(data_cfg.prefetch))
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w") as f:
        json.dump({"split": split, "class_names": list(info.class_names), "counts": counts.tolist()}, f)
    os.replace(temporary, path)  # atomic: a concurrent reader never sees half a file
    return counts


def count_labels(examples: Sequence[Mapping[str, Any]], *, num_classes: int, num_threads: int) -> np.ndarray:
    """Labelled pixels per class over random-access examples with `label` [H, W] (255 = ignore), int64 [N].

    One pass with `num_threads` grain reader threads (at least 1).
    """
    ds = grain.MapDataset.source(examples).map(functools.partial(_label_counts, num_classes=num_classes))
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
