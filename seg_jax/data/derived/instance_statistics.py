"""What an instance dataset looks like, in numbers: grey-level histograms of foreground and background, object
areas, how many objects touch another, objects per image and a signal-to-noise ratio per image.

Pure functions of arrays: `image_statistics` for one image, `dataset_statistics` for examples (canonical
examples: image, label, instances) summed into one `InstanceStatistics`. `seg_jax.data.nuclei_stats`
draws them for the `nuclei` generators.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping

import numpy as np

from seg_jax import labels

GREY_LEVELS = 256
_MAD_TO_STD = 1.4826  # std of a normal distribution / its median absolute deviation


@dataclasses.dataclass(frozen=True)
class InstanceStatistics:
    """Statistics of a set of images with instance ids.

    Attributes:
        foreground_histogram: int64 [256] pixels per grey level (0..255, the channel mean rounded) where the label
            is a class above background; ignored pixels are counted nowhere.
        background_histogram: int64 [256] the same where the label is background (0).
        areas: int64 [M] pixels of each instance (all images, cut ones at the image border included).
        touching: bool [M] whether the instance shares a boundary with another: one of its pixels has an edge
            neighbour (4-connectivity; diagonal contact does not count) in another instance.
        counts: int64 [I] instances per image.
        snr: float64 [I] per image (median foreground - median background grey level) / background noise std
            (`noise_std`); NaN for an image without foreground, without background, or with no measurable noise.
    """

    foreground_histogram: np.ndarray
    background_histogram: np.ndarray
    areas: np.ndarray
    touching: np.ndarray
    counts: np.ndarray
    snr: np.ndarray

    @property
    def touching_fraction(self) -> float:
        """The share of instances touching another (NaN without instances)."""
        return float(self.touching.mean()) if len(self.touching) else float("nan")

    @classmethod
    def concatenate(cls, parts: Iterable["InstanceStatistics"]) -> "InstanceStatistics":
        parts = list(parts)
        if not parts:
            raise ValueError("no statistics to concatenate (no examples)")
        return cls(foreground_histogram=sum(p.foreground_histogram for p in parts),
                   background_histogram=sum(p.background_histogram for p in parts),
                   **{name: np.concatenate([getattr(p, name) for p in parts])
                      for name in ("areas", "touching", "counts", "snr")})


def grey_levels(image: np.ndarray) -> np.ndarray:
    """int64 [H, W] grey levels 0..255 of a uint8 image [H, W] or [H, W, C] (the channel mean, rounded)."""
    image = np.asarray(image)
    grey = image.mean(axis=-1) if image.ndim == 3 else image.astype(np.float64)
    return np.rint(grey).astype(np.int64)


def touching_instances(instances: np.ndarray) -> np.ndarray:
    """Sorted int64 ids (> 0) of the instances of `instances` int [H, W] (0 = background) that share a pixel edge
    with a pixel of another instance."""
    instances = np.asarray(instances)
    touching = []
    for a, b in ((instances[:, :-1], instances[:, 1:]), (instances[:-1], instances[1:])):
        contact = (a != b) & (a > 0) & (b > 0)
        touching += [a[contact], b[contact]]
    return np.unique(np.concatenate(touching)).astype(np.int64)


def noise_std(grey: np.ndarray, background: np.ndarray) -> float:
    """Robust pixel-noise std (grey levels) from horizontally adjacent background pixel pairs: 1.4826 x the median
    absolute deviation of their differences / sqrt(2). Differences of neighbours cancel the smooth background
    (uneven illumination, vignetting), so what is left is the pixel noise. NaN with no such pair.

    Args:
        grey: float or int [H, W] grey levels.
        background: bool [H, W].
    """
    pairs = background[:, :-1] & background[:, 1:]
    diff = (np.asarray(grey, np.float64)[:, 1:] - np.asarray(grey, np.float64)[:, :-1])[pairs]
    if not len(diff):
        return float("nan")
    return float(_MAD_TO_STD * np.median(np.abs(diff - np.median(diff))) / np.sqrt(2))


def image_statistics(*, image: np.ndarray, label: np.ndarray, instances: np.ndarray) -> InstanceStatistics:
    """`InstanceStatistics` of one image.

    Args:
        image: uint8 [H, W, C] or [H, W].
        label: int [H, W] classes (0 = background, `labels.STORED_IGNORE` = ignore).
        instances: int [H, W] instance ids (0 = none); ids need not be consecutive.
    """
    grey = grey_levels(image)
    label = np.asarray(label)
    instances = np.asarray(instances)
    foreground = (label > 0) & (label != labels.STORED_IGNORE)
    background = label == 0
    ids, areas = np.unique(instances[instances > 0], return_counts=True)
    touching = np.isin(ids, touching_instances(instances))
    noise = noise_std(grey, background)
    snr = float("nan")
    if foreground.any() and background.any() and noise > 0:
        snr = float((np.median(grey[foreground]) - np.median(grey[background])) / noise)
    return InstanceStatistics(
        foreground_histogram=np.bincount(grey[foreground], minlength=GREY_LEVELS).astype(np.int64),
        background_histogram=np.bincount(grey[background], minlength=GREY_LEVELS).astype(np.int64),
        areas=areas.astype(np.int64), touching=touching, counts=np.array([len(ids)], np.int64),
        snr=np.array([snr], np.float64))


def dataset_statistics(examples: Iterable[Mapping[str, np.ndarray]]) -> InstanceStatistics:
    """`image_statistics` of every example (mappings with image, label, instances), in one `InstanceStatistics`.

    Raises:
        ValueError: no examples, or an example without instance ids (the message names its id).
    """
    parts = []
    for example in examples:
        if "instances" not in example:
            raise ValueError(f"example {example.get('id', len(parts))!r} has no instance ids")
        parts.append(image_statistics(image=example["image"], label=example["label"], instances=example["instances"]))
    return InstanceStatistics.concatenate(parts)
