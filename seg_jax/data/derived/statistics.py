"""Class statistics of labelled examples: pixel counts per class (overall, and of the images where each class
is present) and class weights from those counts.

Pure functions of examples and arrays; caching the counts of a dataset's split (on disk beside its TFDS
files, and in memory) is the catalog's job (`catalog.Dataset.class_pixel_counts`).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, Sequence

import grain
import numpy as np

from seg_jax import labels

WEIGHT_METHODS = ("inverse_frequency", "median_frequency", "median_global_frequency")
# Methods that need `LabelStatistics.present_image_pixels`, not only the pixel counts.
_PRESENCE_METHODS = ("median_frequency",)


@dataclasses.dataclass(frozen=True)
class LabelStatistics:
    """Label statistics of a set of examples, int64 [N] each (ignored pixels never counted).

    Attributes:
        pixel_counts: labelled pixels of class c.
        present_image_pixels: labelled pixels of all classes, summed over the images in which c is present
            (has at least one pixel): the denominator of Eigen & Fergus's class frequency.
        present_images: images in which c is present.
    """

    pixel_counts: np.ndarray
    present_image_pixels: np.ndarray
    present_images: np.ndarray

    @classmethod
    def of_counts(cls, counts: np.ndarray) -> "LabelStatistics":
        """The statistics of one image from its pixel counts int [N]."""
        counts = np.asarray(counts, np.int64)
        present = counts > 0
        return cls(counts, np.where(present, counts.sum(), 0).astype(np.int64), present.astype(np.int64))

    @classmethod
    def zeros(cls, num_classes: int) -> "LabelStatistics":
        return cls(*(np.zeros(num_classes, np.int64) for _ in range(3)))

    def __add__(self, other: "LabelStatistics") -> "LabelStatistics":
        return LabelStatistics(self.pixel_counts + other.pixel_counts,
                               self.present_image_pixels + other.present_image_pixels,
                               self.present_images + other.present_images)


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
    return label_statistics(examples, num_classes=num_classes, num_threads=num_threads).pixel_counts


def label_statistics(examples: Sequence[Mapping[str, Any]], *, num_classes: int,
                     num_threads: int) -> LabelStatistics:
    """`LabelStatistics` of random-access examples with `label` int [H, W] (`STORED_IGNORE` not counted).

    One pass with `num_threads` grain reader threads (at least 1).
    """
    ds = grain.MapDataset.source(examples).map(functools.partial(_example_counts, num_classes=num_classes))
    threads = max(num_threads, 1)
    total = LabelStatistics.zeros(num_classes)
    for example_counts in ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=threads)):
        total = total + LabelStatistics.of_counts(example_counts)
    return total


def _image_size(example: Mapping[str, Any]) -> np.ndarray:
    return np.asarray(np.shape(example["image"])[:2], np.int64)


def max_image_size(examples: Sequence[Mapping[str, Any]], *, num_threads: int) -> tuple[int, int]:
    """(largest height, largest width) in px over random-access examples with `image` [H, W, ...] (the two maxima
    may come from different images); one pass with `num_threads` grain reader threads (at least 1).

    Raises:
        ValueError: no examples.
    """
    if not len(examples):
        raise ValueError("max_image_size of no examples")
    ds = grain.MapDataset.source(examples).map(_image_size)
    threads = max(num_threads, 1)
    largest = np.zeros(2, np.int64)
    for size in ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=threads)):
        largest = np.maximum(largest, size)
    return int(largest[0]), int(largest[1])


def class_weights_from_counts(counts: Any, *, method: str, present_image_pixels: Any = None) -> np.ndarray:
    """Per-class loss weights, float32 [N], from pixel counts n [N] (and, for "median_frequency", the
    labelled pixels P [N] of the images in which each class is present: `LabelStatistics`).

    Over the K classes present (n_c > 0):
        "inverse_frequency": with f_c = n_c / sum(n), w_c = 1 / (K f_c). Normalised so that the mean
            weight per labelled pixel, sum_c f_c w_c, is 1 (the loss keeps its scale) and every present
            class carries the same total weight 1 / K.
        "median_frequency": Eigen & Fergus (2015): with f_c = n_c / P_c, the frequency of c within the
            images where it is present, w_c = median(f) / f_c, median over present classes (the median
            class gets weight 1).
        "median_global_frequency": w_c = median(f) / f_c with the global f_c = n_c / sum(n) (what
            "median_frequency" was before; not Eigen & Fergus's definition).
    A class with no pixels gets weight 0 (it adds no pixels to the loss; never inf or NaN).

    Raises:
        ValueError: unknown method, negative counts, no labelled pixel at all, "median_frequency" without
            `present_image_pixels`, or `present_image_pixels` below the counts.
    """
    counts = np.asarray(counts, np.float64)
    if method not in WEIGHT_METHODS:
        raise ValueError(f"unknown class weight method {method!r}; valid methods: {', '.join(WEIGHT_METHODS)}")
    if (counts < 0).any() or counts.sum() <= 0:
        raise ValueError(f"class pixel counts must be >= 0 with a positive total, got {counts.tolist()}")
    present = counts > 0
    frequency = counts / counts.sum()
    if method in _PRESENCE_METHODS:
        if present_image_pixels is None:
            raise ValueError(f"class weight method {method!r} needs present_image_pixels (LabelStatistics)")
        image_pixels = np.asarray(present_image_pixels, np.float64)
        if image_pixels.shape != counts.shape or (image_pixels < counts).any():
            raise ValueError(f"present_image_pixels {image_pixels.tolist()} must be >= the class pixel counts "
                             f"{counts.tolist()}, one per class")
        frequency = np.divide(counts, image_pixels, out=np.zeros_like(counts), where=present)
    weights = np.zeros_like(frequency)
    if method == "inverse_frequency":
        weights[present] = 1.0 / (present.sum() * frequency[present])
    else:
        weights[present] = np.median(frequency[present]) / frequency[present]
    return weights.astype(np.float32)


def class_weights(stats: LabelStatistics, *, method: str) -> np.ndarray:
    """`class_weights_from_counts` of `stats` (every method), float32 [N]."""
    return class_weights_from_counts(stats.pixel_counts, method=method,
                                     present_image_pixels=stats.present_image_pixels)
