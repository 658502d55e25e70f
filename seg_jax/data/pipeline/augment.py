"""Host-side geometry and normalisation of canonical examples (numpy + Pillow, no jax).

Every spatial key of an example moves together; how each is resized and padded:
    image      bilinear, padded with 0
    label      nearest,  padded with the ignore index
    instances  nearest,  padded with 0 (background)
    weights    nearest,  padded with 0 (padding carries no loss)
    distance   nearest,  padded with 0 (so it stays > 0 exactly on instance pixels)
Other keys (e.g. `id`) pass through unchanged. Both interpolations sample at pixel centres, so a
label pixel and the image pixel at the same place stay aligned.

The crop windows: rescale + crop (`sample_crop` / `crop_and_flip`) or torchvision's random resized crop
(`sample_resized_crop` / `resized_crop`), either class-aware as MMSeg's RandomCrop (`cat_max_ratio`), then
the symmetries of the square (`dihedral`). Warps (rotation, elastic) are in `warp`, the photometric transforms in
`photometric`; `policy` draws and orders them all.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from seg_jax import labels

SPATIAL_KEYS = ("image", "label", "instances", "weights", "distance")
_PAD_WITH_IGNORE = "label"
CAT_MAX_TRIES = 10  # MMSeg's RandomCrop: redraws of a window whose largest class covers too much
_RESIZED_CROP_TRIES = 10  # torchvision's RandomResizedCrop: draws of a window that fits before the central fallback


@dataclasses.dataclass(frozen=True)
class CropParams:
    """One draw of the training augmentation: rescale factor, crop corner (pixels after rescale), flip."""

    scale: float
    top: int
    left: int
    flip: bool


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(height, width) in pixels after rescaling by `scale`, rounded, at least 1."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def sample_crop(rng: np.random.Generator, *, image_size: tuple[int, int], crop_size: Sequence[int],
                scale_range: Sequence[float], hflip: bool, label: np.ndarray | None = None,
                cat_max_ratio: float = 1.0, ignore_index: int = labels.IGNORE_INDEX) -> CropParams:
    """Draws a uniform scale in `scale_range`, a uniform crop corner and a fair-coin flip (if `hflip`).

    When the rescaled image is smaller than the crop along an axis, the corner is 0 there (the
    crop is then padded bottom/right). With `cat_max_ratio` < 1 and the example's `label` [H, W], the
    corner is class-aware (`class_aware_window`) on the label rescaled and padded as `crop_and_flip` does it.
    """
    scale = float(rng.uniform(scale_range[0], scale_range[1]))
    height, width = scaled_size(*image_size, scale)

    def corner() -> tuple[int, int]:
        return (int(rng.integers(0, max(height - crop_size[0], 0) + 1)),
                int(rng.integers(0, max(width - crop_size[1], 0) + 1)))

    if cat_max_ratio < 1.0 and label is not None:
        scaled = _resize_array(np.asarray(label), (height, width), bilinear=False)
        extra = [(0, max(crop_size[0] - height, 0)), (0, max(crop_size[1] - width, 0))]
        scaled = np.pad(scaled, extra, constant_values=ignore_index)  # as `pad` pads the label
        top, left = class_aware_window(lambda: (*corner(), *crop_size), scaled, cat_max_ratio=cat_max_ratio,
                                       ignore_index=ignore_index)[:2]
    else:
        top, left = corner()
    flip = bool(hflip) and bool(rng.random() < 0.5)
    return CropParams(scale=scale, top=top, left=left, flip=flip)


Window = tuple[int, int, int, int]  # (top, left, height, width) in pixels


def class_ratio_ok(window: np.ndarray, *, cat_max_ratio: float, ignore_index: int) -> bool:
    """MMSeg's test of a label window: at least two classes, and the largest covers less than `cat_max_ratio`
    of the labelled pixels (`ignore_index` and the stored ignore value are not counted)."""
    values = window[(window != ignore_index) & (window != labels.STORED_IGNORE)]
    counts = np.bincount(values.ravel().astype(np.int64))
    counts = counts[counts > 0]
    return len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio


def class_aware_window(draw: Callable[[], Window], label: np.ndarray, *, cat_max_ratio: float,
                       ignore_index: int) -> Window:
    """MMSeg's class-aware RandomCrop: `draw()`s a window of `label` [H, W] and redraws it up to `CAT_MAX_TRIES`
    times while it fails `class_ratio_ok`; the last draw is kept even if it fails (a label map of one class)."""
    window = draw()
    for _ in range(CAT_MAX_TRIES):
        top, left, height, width = window
        if class_ratio_ok(label[top:top + height, left:left + width], cat_max_ratio=cat_max_ratio,
                          ignore_index=ignore_index):
            break
        window = draw()
    return window


@dataclasses.dataclass(frozen=True)
class ResizedCropParams:
    """One draw of a random resized crop: the window (pixels of the original image) and the flip."""

    top: int
    left: int
    height: int
    width: int
    flip: bool


def resized_crop_window(rng: np.random.Generator, image_size: tuple[int, int], *, area: Sequence[float],
                        aspect: Sequence[float]) -> Window:
    """torchvision's RandomResizedCrop.get_params: a window covering a uniform fraction `area` of the image with
    a log-uniform aspect ratio (width / height) in `aspect`, placed uniformly; after `_RESIZED_CROP_TRIES` draws
    that do not fit, the largest central window whose aspect is clamped to `aspect`."""
    height, width = image_size
    log_aspect = np.log(np.asarray(aspect, np.float64))
    for _ in range(_RESIZED_CROP_TRIES):
        target = height * width * rng.uniform(area[0], area[1])
        ratio = float(np.exp(rng.uniform(log_aspect[0], log_aspect[1])))
        w, h = round(np.sqrt(target * ratio)), round(np.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    ratio = width / height
    if ratio < min(aspect):
        w, h = width, max(1, round(width / min(aspect)))
    elif ratio > max(aspect):
        w, h = max(1, round(height * max(aspect))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def sample_resized_crop(rng: np.random.Generator, *, image_size: tuple[int, int], area: Sequence[float],
                        aspect: Sequence[float], hflip: bool, label: np.ndarray | None = None,
                        cat_max_ratio: float = 1.0, ignore_index: int = labels.IGNORE_INDEX) -> ResizedCropParams:
    """A random resized crop's window (`resized_crop_window`, class-aware on `label` [H, W] with `cat_max_ratio`
    < 1, judged at the original resolution) and a fair-coin flip (if `hflip`)."""
    def draw() -> Window:
        return resized_crop_window(rng, image_size, area=area, aspect=aspect)

    if cat_max_ratio < 1.0 and label is not None:
        window = class_aware_window(draw, np.asarray(label), cat_max_ratio=cat_max_ratio, ignore_index=ignore_index)
    else:
        window = draw()
    flip = bool(hflip) and bool(rng.random() < 0.5)
    return ResizedCropParams(*window, flip=flip)


def resized_crop(example: dict[str, Any], params: ResizedCropParams, *, crop_size: Sequence[int]) -> dict[str, Any]:
    """Applies `params`: the window of every spatial key resized to `crop_size` = (height, width) (module
    docstring: image bilinear, the others nearest), then the optional left-right flip."""
    rows = slice(params.top, params.top + params.height)
    cols = slice(params.left, params.left + params.width)
    out = dict(example)
    for key in SPATIAL_KEYS:
        if key in out:
            out[key] = np.ascontiguousarray(out[key][rows, cols])
    out = resize(out, tuple(crop_size))
    if params.flip:
        for key in SPATIAL_KEYS:
            if key in out:
                out[key] = np.ascontiguousarray(out[key][:, ::-1])
    return out


def dihedral(example: dict[str, Any], *, vflip: bool, rot90: int) -> dict[str, Any]:
    """Every spatial key flipped upside down (if `vflip`), then rotated by `rot90` quarter turns counter-clockwise
    (`np.rot90`'s sense). An odd `rot90` swaps height and width."""
    if not vflip and rot90 % 4 == 0:
        return example
    out = dict(example)
    for key in SPATIAL_KEYS:
        if key in out:
            value = out[key][::-1] if vflip else out[key]
            out[key] = np.ascontiguousarray(np.rot90(value, rot90 % 4, axes=(0, 1)))
    return out


def _resize_array(array: np.ndarray, size: tuple[int, int], *, bilinear: bool) -> np.ndarray:
    if array.shape[:2] == tuple(size):
        return array
    resample = Image.BILINEAR if bilinear else Image.NEAREST
    return np.asarray(Image.fromarray(array).resize((size[1], size[0]), resample), dtype=array.dtype)


def resize(example: dict[str, Any], size: tuple[int, int]) -> dict[str, Any]:
    """Example with every spatial key resized to `size` = (height, width) pixels (module docstring)."""
    out = dict(example)
    for key in SPATIAL_KEYS:
        if key in out:
            out[key] = _resize_array(out[key], size, bilinear=key == "image")
    return out


def pad(example: dict[str, Any], size: tuple[int, int], *, ignore_index: int) -> dict[str, Any]:
    """Example padded bottom/right to at least `size` = (height, width) pixels (module docstring)."""
    height, width = example["image"].shape[:2]
    extra = (max(size[0] - height, 0), max(size[1] - width, 0))
    if extra == (0, 0):
        return dict(example)
    out = dict(example)
    for key in SPATIAL_KEYS:
        if key in out:
            widths = [(0, extra[0]), (0, extra[1])] + [(0, 0)] * (out[key].ndim - 2)
            value = ignore_index if key == _PAD_WITH_IGNORE else 0
            out[key] = np.pad(out[key], widths, constant_values=value)
    return out


def crop_and_flip(example: dict[str, Any], params: CropParams, *, crop_size: Sequence[int],
                  ignore_index: int) -> dict[str, Any]:
    """Applies `params`: rescale, pad to the crop size, crop at (top, left), optional left-right flip.

    Returns an example whose spatial keys are [crop_h, crop_w, ...].
    """
    height, width = example["image"].shape[:2]
    out = resize(example, scaled_size(height, width, params.scale))
    out = pad(out, tuple(crop_size), ignore_index=ignore_index)
    rows = slice(params.top, params.top + crop_size[0])
    cols = slice(params.left, params.left + crop_size[1])
    for key in SPATIAL_KEYS:
        if key in out:
            out[key] = out[key][rows, cols]
            if params.flip:
                out[key] = out[key][:, ::-1]
            out[key] = np.ascontiguousarray(out[key])
    return out


def fitted_size(height: int, width: int, size: Sequence[int]) -> tuple[int, int]:
    """(height, width) px of a `height` x `width` image shrunk to fit inside `size` if larger (aspect kept)."""
    scale = min(size[0] / height, size[1] / width, 1.0)
    if scale >= 1.0:
        return height, width
    fitted = scaled_size(height, width, scale)
    return min(fitted[0], size[0]), min(fitted[1], size[1])


def fit_and_pad(example: dict[str, Any], size: Sequence[int], *, ignore_index: int) -> dict[str, Any]:
    """Eval geometry: shrink to `fitted_size` (aspect ratio kept), then pad bottom/right to exactly `size`."""
    example = resize(example, fitted_size(*example["image"].shape[:2], size))
    return pad(example, tuple(size), ignore_index=ignore_index)


def normalize(image: np.ndarray, *, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """float32 (image - mean) / std of a uint8 [..., 3] image; mean and std in 0..255 units."""
    return ((image.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32))


def to_uint8(images: Any, *, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Inverse of `normalize`, rounded and clipped: uint8 [..., 3] for pictures."""
    pixels = np.asarray(images, np.float32) * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
