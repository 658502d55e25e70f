"""From a semantic model's per-pixel probabilities to an instance map (host-side, scikit-image and SciPy).

Pipeline of `instances_from_semantic`, each step a keyword option:
  foreground probability > `foreground_threshold` → opening → closing → hole filling → instances by
  connected components or marker-controlled watershed → removal of instances under `min_size` pixels →
  ids renumbered 1..K.

The watershed's markers and relief come from the probabilities, the foreground mask's distance transform, or the
model's own distance map (`distance`, the channel a model trained with the loss term "distance" predicts: each
instance's distance to its outline normalised to [0, 1], `seg_jax.data.derived.targets.instance_distance`).

Instance maps are int32 `[H, W]`, 0 = background, instances numbered 1..K.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage
from skimage import feature, measure, morphology, segmentation

METHODS = ("connected_components", "watershed")
MARKERS = ("interior", "erosion", "distance_peaks", "predicted_distance")
ELEVATIONS = ("border", "distance", "predicted_distance")
_NEEDS_DISTANCE = ("the predicted distance map (a model trained with the loss term 'distance' and "
                   "data.distance_target; one foreground, per_class=False)")


def _choice(name: str, value: str, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
    return value


def _clean_mask(
    mask: np.ndarray, *, opening_radius: int, closing_radius: int, fill_holes: bool
) -> np.ndarray:
    if opening_radius > 0:
        mask = morphology.opening(mask, morphology.disk(opening_radius))
    if closing_radius > 0:
        mask = morphology.closing(mask, morphology.disk(closing_radius))
    if fill_holes:
        mask = ndimage.binary_fill_holes(mask)
    return mask


def _seeds(
    mask: np.ndarray,
    *,
    markers: str,
    foreground: np.ndarray,
    interior: np.ndarray,
    border: np.ndarray | None,
    predicted: np.ndarray | None,
    marker_threshold: float,
    erosion_radius: int,
    min_distance: int,
    peak_height: float,
    connectivity: int,
) -> np.ndarray:
    """Boolean `[H, W]` watershed seeds (one marker per connected seed region); `predicted` is the masked,
    non-negative predicted distance map or None."""
    if markers == "interior":
        if border is None:
            raise ValueError("markers='interior' needs border_index (a model trained on border-aware targets)")
        return (interior - border) > marker_threshold
    if markers == "erosion":
        strong = foreground > marker_threshold
        return morphology.erosion(strong, morphology.disk(erosion_radius)) if erosion_radius > 0 else strong
    if markers == "predicted_distance":
        if predicted is None:
            raise ValueError(f"markers='predicted_distance' needs {_NEEDS_DISTANCE}")
        if peak_height <= 0:
            return predicted > marker_threshold
        # Each flooded plateau seeds one instance if its peak clears the threshold (not only its pixels above it).
        plateaus = measure.label(_h_maxima(predicted, peak_height, connectivity=connectivity),
                                 connectivity=connectivity)
        peaks = ndimage.maximum(predicted, plateaus, np.arange(plateaus.max() + 1))
        return (plateaus > 0) & (np.asarray(peaks)[plateaus] > marker_threshold)
    distance = ndimage.distance_transform_edt(mask)
    peaks = feature.peak_local_max(
        distance, min_distance=min_distance, labels=measure.label(mask, connectivity=connectivity),
        exclude_border=False,
    )
    seeds = np.zeros(mask.shape, bool)
    seeds[tuple(peaks.T)] = True
    return seeds


def _h_maxima(distance: np.ndarray, height: float, *, connectivity: int) -> np.ndarray:
    """Boolean `[H, W]`: the regional maxima of the map `distance` flooded to `height` below its peaks (the
    reconstruction by dilation of `distance - height` under `distance`), plateaus connected as `connectivity` says.
    Peaks joined by a saddle less than `height` below the lower one become one connected plateau, so they seed one
    instance; `skimage.morphology.h_maxima` would keep two equally high such peaks apart."""
    distance = distance.astype(np.float64)
    footprint = ndimage.generate_binary_structure(2, connectivity)
    flooded = morphology.reconstruction(distance - height, distance, method="dilation", footprint=footprint)
    return morphology.local_maxima(flooded, connectivity=connectivity, allow_borders=True).astype(bool)


def _check_distance(distance: np.ndarray, shape: tuple[int, ...], *, mask: np.ndarray) -> np.ndarray:
    """The predicted distance float32 `[H, W]`, clipped at 0 and set to 0 off the foreground `mask`: the loss
    never constrains it there, so it must not create peaks or ridges."""
    distance = np.asarray(distance, np.float32)
    if distance.shape != tuple(shape):
        raise ValueError(f"distance must be [H, W] = {tuple(shape)} like the probabilities, got {distance.shape}")
    return np.where(mask, np.maximum(distance, 0.0), 0.0).astype(np.float32)


def _check_probabilities(probabilities: np.ndarray) -> np.ndarray:
    probabilities = np.asarray(probabilities, np.float32)
    if probabilities.ndim != 3 or probabilities.shape[-1] < 2:
        raise ValueError(f"probabilities must be [H, W, N] with N >= 2 channels, got shape {probabilities.shape}")
    return probabilities


def _channel_maps(
    probabilities: np.ndarray, *, class_index: int | None, border_index: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(foreground, interior, border) `[H, W]` probabilities; border is None without a border channel."""
    channels = probabilities.shape[-1]
    for name, index in (("class_index", class_index), ("border_index", border_index)):
        if index is not None and not 0 < index < channels:
            raise ValueError(f"{name} {index} is not an object channel of the {channels} channels (1..{channels - 1})")
    border = probabilities[..., border_index] if border_index is not None else None
    if class_index is None:
        foreground = 1.0 - probabilities[..., 0]
        interior = foreground - border if border is not None else foreground
    else:
        interior = probabilities[..., class_index]
        foreground = interior + border if border is not None else interior
    return foreground, interior, border


def instances_from_semantic(
    probabilities: np.ndarray,
    distance: np.ndarray | None = None,
    *,
    method: str = "connected_components",
    foreground_threshold: float = 0.5,
    class_index: int | None = None,
    border_index: int | None = None,
    markers: str = "distance_peaks",
    elevation: str = "distance",
    marker_threshold: float = 0.5,
    erosion_radius: int = 2,
    min_distance: int = 3,
    peak_height: float = 0.1,
    min_size: int = 0,
    opening_radius: int = 0,
    closing_radius: int = 0,
    fill_holes: bool = False,
    connectivity: int = 1,
) -> np.ndarray:
    """Instances of one image from its softmax probabilities.

    Args:
      probabilities: float `[H, W, N]`, softmax over the model's classes; channel 0 is background. With
        border-aware targets (`seg_jax.data.derived.targets.border_targets`) the channels are background, interior,
        border.
      distance: float `[H, W]`, the model's predicted distance map (`SemanticTask.predict_outputs`), needed by
        markers / elevation "predicted_distance"; ignored otherwise. An input, not an option (positional).
      method: "connected_components" or "watershed" (marker-controlled, `skimage.segmentation.watershed`).
      foreground_threshold: a pixel is foreground when its foreground probability (the object channel(s) plus
        the border channel) exceeds this.
      class_index: the object channel; None means every channel but background and border.
      border_index: the border channel of a border-aware model (2 for `border_targets`), or None.
      markers: watershed seeds, one per connected seed region:
        "interior": interior minus border probability > `marker_threshold` (needs `border_index`);
        "erosion": foreground probability > `marker_threshold`, eroded by a disk of `erosion_radius` pixels
          (0 = no erosion);
        "distance_peaks": maxima of the foreground mask's distance transform at least `min_distance` pixels
          apart (an elongated object has several such maxima and may be split: tune it to the object size);
        "predicted_distance": the h-maxima of the predicted distance map inside the foreground mask: its plateaus
          once flooded `peak_height` below every peak, each kept if its peak exceeds `marker_threshold` (needs
          `distance`).
      elevation: watershed relief: "distance", the negative distance (pixels) to the background, "border",
        the border probability (needs `border_index`), or "predicted_distance", the negative predicted distance
        (needs `distance`).
      marker_threshold: probability threshold of the "interior" and "erosion" markers; predicted-distance threshold
        (normalised units, 0..1) of the "predicted_distance" markers.
      erosion_radius, min_distance: pixels, see `markers`.
      peak_height: normalised distance units; the dynamic a maximum of the predicted distance needs to seed an
        instance ("predicted_distance" markers; 0 = every pixel above `marker_threshold` is a seed, so the seeds
        are the connected regions above it).
      min_size: pixels; instances smaller than this are removed (after splitting).
      opening_radius, closing_radius: pixels, disk radius of a binary opening / closing of the foreground
        mask (0 = none); applied in this order, then `fill_holes`.
      fill_holes: fill the holes of the foreground mask.
      connectivity: 1 (4-neighbours) or 2 (8-neighbours), for labelling and flooding.

    A foreground component that receives no watershed seed is kept whole as one instance.

    Returns:
      int32 `[H, W]` instance ids, 0 = background, instances numbered 1..K.
    """
    _choice("method", method, METHODS)
    _choice("markers", markers, MARKERS)
    _choice("elevation", elevation, ELEVATIONS)
    foreground, interior, border = _channel_maps(
        _check_probabilities(probabilities), class_index=class_index, border_index=border_index
    )
    mask = _clean_mask(
        foreground > foreground_threshold, opening_radius=opening_radius, closing_radius=closing_radius,
        fill_holes=fill_holes,
    )
    if method == "connected_components":
        instances = measure.label(mask, connectivity=connectivity)
    else:
        if elevation == "border" and border is None:
            raise ValueError("elevation='border' needs border_index (a model trained on border-aware targets)")
        if elevation == "predicted_distance" and distance is None:
            raise ValueError(f"elevation='predicted_distance' needs {_NEEDS_DISTANCE}")
        predicted = None if distance is None else _check_distance(distance, mask.shape, mask=mask)
        seeds = _seeds(
            mask, markers=markers, foreground=foreground, interior=interior, border=border, predicted=predicted,
            marker_threshold=marker_threshold, erosion_radius=erosion_radius, min_distance=min_distance,
            peak_height=peak_height, connectivity=connectivity,
        )
        relief = border if elevation == "border" else -ndimage.distance_transform_edt(mask)
        if elevation == "predicted_distance":
            relief = -predicted
        instances = segmentation.watershed(
            relief, measure.label(seeds & mask, connectivity=connectivity), mask=mask, connectivity=connectivity
        )
        # A foreground component that received no seed is kept whole rather than lost.
        orphans = measure.label(mask & (instances == 0), connectivity=connectivity)
        instances = np.where(orphans > 0, orphans + instances.max(), instances)
    if min_size > 0:
        sizes = np.bincount(instances.ravel())
        instances = np.where(sizes[instances] < min_size, 0, instances)
    return segmentation.relabel_sequential(instances.astype(np.int32))[0]


def instances_per_class(
    probabilities: np.ndarray, *, background_index: int = 0, **options: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Instances of every object class of a multi-class model (e.g. `shapes`).

    Each pixel is first given its most probable class; the instances of class c are then found, with the
    options of `instances_from_semantic` (passed through `**options`; not the border-based markers/elevation),
    in the map `p_c` restricted to the pixels whose most probable class is c (as channel 1 of a two-channel
    input), so instances of different classes never overlap.

    Args:
      probabilities: float `[H, W, N]` softmax probabilities.
      background_index: the class that has no instances.

    Returns:
      `(instances, class_of_instance)`: int32 `[H, W]` instance ids (0 = background, 1..K) and int32 `[K + 1]`
      holding the class of each id (`class_of_instance[0] = background_index`), so that
      `class_of_instance[instances]` is the class map of the instances.
    """
    probabilities = _check_probabilities(probabilities)
    winner = probabilities.argmax(axis=-1)
    instances = np.zeros(winner.shape, np.int32)
    classes = [background_index]
    for c in range(probabilities.shape[-1]):
        if c == background_index:
            continue
        own = np.where(winner == c, probabilities[..., c], 0.0)
        found = instances_from_semantic(np.stack([1.0 - own, own], axis=-1), **options)
        instances = np.where(found > 0, found + len(classes) - 1, instances)
        classes += [c] * int(found.max())
    return instances, np.asarray(classes, np.int32)


def instance_scores(
    probabilities: np.ndarray, instances: np.ndarray, *, class_of_instance: np.ndarray | None = None
) -> np.ndarray:
    """A confidence score per instance (for COCO AP): the mean probability of its class over its pixels.

    Args:
      probabilities: float `[H, W, N]` softmax probabilities.
      instances: int `[H, W]`, 0 = background, instances numbered 1..K.
      class_of_instance: int `[K + 1]` as returned by `instances_per_class`; None scores every instance by its
        foreground probability `1 - p_0`.

    Returns:
      float32 `[K]`, entry k-1 for instance k (NaN for an id absent from `instances`).
    """
    probabilities = _check_probabilities(probabilities)
    instances = np.asarray(instances)
    count = int(instances.max(initial=0))
    if class_of_instance is None:
        per_pixel = 1.0 - probabilities[..., 0]
    else:
        chosen = np.asarray(class_of_instance)[instances]
        per_pixel = np.take_along_axis(probabilities, chosen[..., None], axis=-1)[..., 0]
    if count == 0:
        return np.zeros((0,), np.float32)
    return np.asarray(ndimage.mean(per_pixel, instances, np.arange(1, count + 1)), np.float32)


def instances_with_scores(
    probabilities: np.ndarray, distance: np.ndarray | None = None, *, per_class: bool = False, **options: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Instances of one image as `config.evals.<name>` of type "instances" makes them (evaluation and prediction).

    Args:
      probabilities: float `[H, W, N]` softmax probabilities.
      distance: float `[H, W]` predicted distance map of a distance model, or None (`instances_from_semantic`;
        one foreground only).
      per_class: `instances_per_class` (every object class of a multi-class model), else one foreground
        (`instances_from_semantic`).
      **options: the options of `instances_from_semantic`.

    Returns:
      `(instances, scores, class_of_instance)`: int32 `[H, W]` ids 0..K, float32 `[K]` (`instance_scores`), and int32
      `[K + 1]` the class of each id (0 for the background; 1 for every instance when not `per_class`).
    """
    if per_class:
        instances, class_of = instances_per_class(probabilities, **options)
        return instances, instance_scores(probabilities, instances, class_of_instance=class_of), class_of
    instances = instances_from_semantic(probabilities, distance, **options)
    count = int(instances.max(initial=0))
    class_of = np.concatenate([[0], np.ones(count, np.int32)]).astype(np.int32)
    return instances, instance_scores(probabilities, instances), class_of
