"""Host-side geometry and normalisation of canonical examples (numpy + Pillow, no jax).

Every spatial key of an example moves together; how each is resized and padded:
    image      bilinear, padded with 0
    label      nearest,  padded with the ignore index
    instances  nearest,  padded with 0 (background)
    weights    nearest,  padded with 0 (padding carries no loss)
    distance   nearest,  padded with 0 (so it stays > 0 exactly on instance pixels)
Other keys (e.g. `id`) pass through unchanged. Both interpolations sample at pixel centres, so a
label pixel and the image pixel at the same place stay aligned.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
from PIL import Image

SPATIAL_KEYS = ("image", "label", "instances", "weights", "distance")
_PAD_WITH_IGNORE = "label"


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
                scale_range: Sequence[float], hflip: bool) -> CropParams:
    """Draws a uniform scale in `scale_range`, a uniform crop corner and a fair-coin flip (if `hflip`).

    When the rescaled image is smaller than the crop along an axis, the corner is 0 there (the
    crop is then padded bottom/right).
    """
    scale = float(rng.uniform(scale_range[0], scale_range[1]))
    height, width = scaled_size(*image_size, scale)
    top = int(rng.integers(0, max(height - crop_size[0], 0) + 1))
    left = int(rng.integers(0, max(width - crop_size[1], 0) + 1))
    flip = bool(hflip) and bool(rng.random() < 0.5)
    return CropParams(scale=scale, top=top, left=left, flip=flip)


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


def fit_and_pad(example: dict[str, Any], size: Sequence[int], *, ignore_index: int) -> dict[str, Any]:
    """Eval geometry: shrink to fit inside `size` = (height, width) if larger (aspect ratio kept),
    then pad bottom/right to exactly `size`."""
    height, width = example["image"].shape[:2]
    scale = min(size[0] / height, size[1] / width, 1.0)
    if scale < 1.0:
        fitted = scaled_size(height, width, scale)
        example = resize(example, (min(fitted[0], size[0]), min(fitted[1], size[1])))
    return pad(example, tuple(size), ignore_index=ignore_index)


def normalize(image: np.ndarray, *, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """float32 (image - mean) / std of a uint8 [..., 3] image; mean and std in 0..255 units."""
    return ((image.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32))


def to_uint8(images: Any, *, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Inverse of `normalize`, rounded and clipped: uint8 [..., 3] for pictures."""
    pixels = np.asarray(images, np.float32) * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
