"""Per-pixel training targets derived from instance ids, computed once when a dataset is prepared.

* `unet_weight_map`: the U-Net paper's loss weight map (Ronneberger et al. 2015, eq. 2), which makes the thin
  background gaps between touching objects expensive to get wrong.
* `border_targets` / `mask_and_border`: border-aware targets in the style of the Data Science Bowl 2018 winners,
  so that a semantic model learns to separate touching instances.
* `instance_distance`: each instance's distance transform normalised to [0, 1], the regression target whose
  predicted peaks seed a watershed (`seg_jax.postprocess`, markers / elevation "predicted_distance").

All functions are host-side NumPy/SciPy, take an instance map `[H, W]` of non-negative integer ids
(0 = background; ids need not be consecutive) and return `[H, W]` arrays. Distances are Euclidean, in pixels,
between pixel centres (a background pixel that shares an edge with an instance is at distance 1 from it).
The image edge is not a boundary: nothing outside the image counts as background or as an instance.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from seg_jax.labels import IGNORE_INDEX

DISTANCE_TARGETS = (None, "normalized")  # `data.distance_target` values (`instance_distance`)


def _check_instances(instances: np.ndarray) -> np.ndarray:
    instances = np.asarray(instances)
    if instances.ndim != 2 or not np.issubdtype(instances.dtype, np.integer):
        raise ValueError(f"instances must be an integer [H, W] array, got {instances.dtype} {instances.shape}")
    if instances.size and instances.min() < 0:
        raise ValueError(f"instances must be >= 0 (0 = background), got min {instances.min()}")
    return instances.astype(np.int32, copy=False)


def nearest_instance_distances(
    instances: np.ndarray, *, max_distance: float
) -> tuple[np.ndarray, np.ndarray]:
    """Distances from every pixel to its nearest and second-nearest instance.

    Args:
      instances: int `[H, W]` instance ids, 0 = background.
      max_distance: pixels; distances larger than this may be reported as `inf` (each instance's distance
        transform is computed only in its bounding box padded by `max_distance`, which is what makes this fast).

    Returns:
      `(d1, d2)`, float64 `[H, W]` each, in pixels: the distance to the nearest pixel of the nearest instance and
      of the second-nearest (different) instance. Values `<= max_distance` are exact; `inf` where fewer than
      one / two instances lie within `max_distance`. On a pixel of instance k, `d1 = 0` and `d2` is the distance
      to the nearest other instance.
    """
    instances = _check_instances(instances)
    d1 = np.full(instances.shape, np.inf)
    d2 = np.full(instances.shape, np.inf)
    pad = int(np.ceil(max_distance))
    height, width = instances.shape
    for index, box in enumerate(ndimage.find_objects(instances)):
        if box is None:  # an unused id
            continue
        rows = slice(max(box[0].start - pad, 0), min(box[0].stop + pad, height))
        cols = slice(max(box[1].start - pad, 0), min(box[1].stop + pad, width))
        # Exact inside the window: every pixel of the instance lies in it, and every pixel outside the
        # window is farther than `pad` from the instance.
        distance = ndimage.distance_transform_edt(instances[rows, cols] != index + 1)
        near, second = d1[rows, cols], d2[rows, cols]  # views: updated in place
        np.minimum(second, np.maximum(near, distance), out=second)
        np.minimum(near, distance, out=near)
    return d1, d2


def unet_weight_map(
    instances: np.ndarray,
    *,
    class_weights: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    w0: float = 10.0,
    sigma: float = 5.0,
    truncate: float = 5.0,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """The U-Net loss weight map `w(x) = w_c(x) + w0 · exp(-(d1(x) + d2(x))² / (2σ²))`.

    `d1`, `d2` are the distances (pixels) from pixel x to the nearest and the second-nearest instance. As in the
    paper, whose separation term exists to weight the background gaps between touching cells, the term is added
    on background pixels (`instances == 0`) only; instance pixels get `w_c` alone. Where fewer than two instances
    exist, `d2` is undefined and taken as infinite, so the term is 0 (there is no gap to separate). Like
    `scipy.ndimage.gaussian_filter`, the term is truncated: it is dropped where the second-nearest instance is
    farther than `truncate · sigma` pixels, where it is below `w0 · exp(-truncate² / 2)` (`w0 · 4e-6` for 5).

    Args:
      instances: int `[H, W]` instance ids, 0 = background.
      class_weights: float `[N]` per-class weights `w_c`; None means `w_c = 1` for every pixel.
      labels: int `[H, W]` class map in `[0, N)` (or `ignore_index`) that indexes `class_weights`; defaults to
        `instances > 0`, i.e. class 0 = background and class 1 = object.
      w0: weight of the separation term (paper: 10).
      sigma: pixels, width of the separation term (paper: about 5).
      truncate: in units of sigma, see above.
      ignore_index: label whose pixels get weight 0.

    Returns:
      float32 `[H, W]` weights.
    """
    instances = _check_instances(instances)
    if labels is None:
        labels = (instances > 0).astype(np.int32)
    labels = np.asarray(labels)
    if labels.shape != instances.shape:
        raise ValueError(f"labels shape {labels.shape} does not match instances shape {instances.shape}")
    ignored = labels == ignore_index
    if class_weights is None:
        weights = np.ones(instances.shape, np.float64)
    else:
        class_weights = np.asarray(class_weights, np.float64)
        bad = (~ignored) & ((labels < 0) | (labels >= len(class_weights)))
        if bad.any():
            raise ValueError(
                f"labels value {labels[bad][0]} has no entry in class_weights (valid: 0..{len(class_weights) - 1}"
                f" or ignore_index {ignore_index})"
            )
        weights = class_weights[np.where(ignored, 0, labels)]
    if w0 != 0:
        d1, d2 = nearest_instance_distances(instances, max_distance=truncate * sigma)
        separation = w0 * np.exp(-((d1 + d2) ** 2) / (2.0 * sigma**2))  # exp(-inf) = 0 where d2 is undefined
        weights = weights + np.where(instances == 0, separation, 0.0)
    return np.where(ignored, 0.0, weights).astype(np.float32)


BACKGROUND, INTERIOR, BORDER = 0, 1, 2
BORDER_CLASS_NAMES = ("background", "interior", "border")  # indexed by the classes above


def border_targets(instances: np.ndarray, *, width: int = 2) -> np.ndarray:
    """Three-class targets: 0 background, 1 interior, 2 border.

    A pixel is border (2) when either
      * it belongs to an instance and lies within `width` pixels of a pixel outside that instance (background or
        another instance): a band `width` pixels thick inside every instance outline, on both sides of the contact
        line of touching instances (the image edge is not an outline); or
      * it is background with `d1 + d2 <= width + 1`, `d1`/`d2` its distances to the nearest and second-nearest
        instance: it lies in a gap at most `width` pixels wide between two different instances (exactly so for a
        straight gap, where `d1 + d2` is the gap width + 1 on every gap pixel).
    Other instance pixels are interior (1), other background pixels are background (0). An instance whose every
    pixel is within `width` of its outline (thinner than about `2 · width + 1` pixels) keeps its deepest pixels
    (largest distance to the outline) as interior, so that every instance has an interior seed.

    Args:
      instances: int `[H, W]` instance ids, 0 = background.
      width: pixels, the border thickness (>= 1).

    Returns:
      int32 `[H, W]` classes in {0, 1, 2}.
    """
    instances = _check_instances(instances)
    if width < 1:
        raise ValueError(f"border width must be >= 1 pixel, got {width}")
    d1, d2 = nearest_instance_distances(instances, max_distance=width + 1)
    foreground = instances > 0
    # On a pixel of instance k, d2 is the distance to the nearest other instance, so the distance to the nearest
    # pixel outside k is the smaller of that and the distance to the background.
    # (scipy's transform is meaningless without any zero, hence the guard for an image with no background)
    to_background = ndimage.distance_transform_edt(foreground) if not foreground.all() else np.inf
    inner = np.minimum(to_background, d2)
    border = np.where(foreground, inner <= width, d1 + d2 <= width + 1)
    targets = np.where(border, BORDER, np.where(foreground, INTERIOR, BACKGROUND)).astype(np.int32)
    # Instances left without interior pixels get their deepest pixels back as interior.
    present = np.bincount(instances.ravel()) > 0
    present[0] = False
    present[instances[targets == INTERIOR]] = False
    thin = np.flatnonzero(present)
    if thin.size:
        deepest = np.zeros(len(present))
        deepest[thin] = ndimage.maximum(inner, instances, thin)
        targets[np.isin(instances, thin) & (inner == deepest[instances])] = INTERIOR
    return targets


def mask_and_border(instances: np.ndarray, *, width: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The two-output form of `border_targets`, for a model with two sigmoid outputs.

    Args:
      instances: int `[H, W]` instance ids, 0 = background.
      width: pixels, as in `border_targets`.

    Returns:
      `(mask, border)`, int32 `[H, W]` each in {0, 1}: `mask` is every instance pixel (`instances > 0`),
      `border` is the border class of `border_targets` (which includes narrow background gaps, so `border` is
      not a subset of `mask`).
    """
    instances = _check_instances(instances)
    return (instances > 0).astype(np.int32), (border_targets(instances, width=width) == BORDER).astype(np.int32)



def instance_distance(instances: np.ndarray) -> np.ndarray:
    """Per-instance distance to the instance's outline, normalised to [0, 1] by its own maximum.

    On a pixel x of instance k the value is `e_k(x) / max_k e_k`, `e_k(x)` the Euclidean distance (pixels) from x to
    the nearest pixel outside k (background or another instance; 1 on the outline, as for border targets); 0 on
    background. Touching instances therefore meet in a valley of low values, and each instance has one peak of
    exactly 1 at its deepest pixel(s), whatever its size. Normalising per instance (rather than regressing pixels)
    makes the target independent of the object size and of the training rescale (a rescaled map is the map of the
    rescaled instance), so one marker threshold serves small and large nuclei, and the loss weighs them alike.
    The image edge is not an outline (module docstring). An instance that fills the whole image is 1 everywhere.

    Args:
      instances: int `[H, W]` instance ids, 0 = background.

    Returns:
      float32 `[H, W]` in [0, 1], > 0 exactly on instance pixels.
    """
    instances = _check_instances(instances)
    out = np.zeros(instances.shape, np.float64)
    height, width = instances.shape
    for index, box in enumerate(ndimage.find_objects(instances)):
        if box is None:  # an unused id
            continue
        # A one-pixel ring around the bounding box holds no pixel of the instance, and the nearest pixel outside
        # it is never farther than that ring: the window's transform is exact.
        rows = slice(max(box[0].start - 1, 0), min(box[0].stop + 1, height))
        cols = slice(max(box[1].start - 1, 0), min(box[1].stop + 1, width))
        inside = instances[rows, cols] == index + 1
        distance = ndimage.distance_transform_edt(inside) if not inside.all() else inside.astype(np.float64)
        out[rows, cols] = np.where(inside, distance / distance.max(), out[rows, cols])
    return out.astype(np.float32)
