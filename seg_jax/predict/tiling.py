"""Sliding-window inference with fixed memory: tile positions, blending weights and the stitched logits.

Every tile has the same shape `[tile_size, tile_size]`, so the model compiles once and its memory is fixed
whatever the image size; only the host buffers of the whole image (the image itself and the blended logits) grow
with it. The image is padded at the bottom/right to a multiple of the model's input multiple, and an image smaller
than a tile along an axis is padded there to one tile (not tiled); padding is 0 after normalisation (the mean
colour), as the models pad their own input (`seg_jax.models.layers.pad_to_multiple`), and is cropped off. Tiles
start at multiples of that input multiple, so each sees the pooling grid of the whole image.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from seg_jax.data.pipeline import augment
from seg_jax.predict.config import BLENDS


def axis_starts(length: int, *, tile_size: int, overlap: int, align: int = 1) -> np.ndarray:
    """int `[n]` first pixels of the tiles along an axis of `length` pixels (a multiple of `align`, as is
    `tile_size`): spread evenly from 0 to `length - tile_size`, each a multiple of `align` (so every tile meets the
    model's pooling grid where the whole image does), neighbours sharing at least `overlap` pixels (`overlap` <=
    `tile_size - align`); `[0]` when the axis fits in one tile."""
    if length <= tile_size:
        return np.zeros(1, np.int64)
    stride = (tile_size - overlap) // align * align  # the largest step that keeps `overlap`
    count = math.ceil((length - tile_size) / stride) + 1
    gap = (length - tile_size) / (count - 1)  # <= stride, so a step floored to `align` is <= stride too
    return (np.floor(np.arange(count) * gap / align + 1e-9) * align).astype(np.int64)


def tile_corners(height: int, width: int, *, tile_size: int, overlap: int, align: int = 1) -> list[tuple[int, int]]:
    """`(top, left)` pixels of every tile of a padded `height` x `width` image (`padded_size`), row by row."""
    rows = axis_starts(height, tile_size=tile_size, overlap=overlap, align=align)
    cols = axis_starts(width, tile_size=tile_size, overlap=overlap, align=align)
    return [(int(top), int(left)) for top in rows for left in cols]


def tile_count(height: int, width: int, *, tile_size: int, overlap: int, align: int = 1) -> int:
    """How many tiles an unpadded `height` x `width` image takes."""
    return len(tile_corners(*padded_size(height, width, tile_size=tile_size, align=align), tile_size=tile_size,
                            overlap=overlap, align=align))


def blend_weights(tile_size: int, *, blend: str, overlap: int, gaussian_sigma: float) -> np.ndarray:
    """float32 `[tile_size, tile_size]` weight of each pixel of a tile's logits, the product of a 1-D profile
    along each axis, positive everywhere (a pixel at the image's edge is covered by one tile only).

    "gaussian": exp(-(t - c)^2 / (2 s^2)) at pixel t, c = (tile_size - 1) / 2, s = gaussian_sigma * tile_size.
    "linear": min(1, (t + 0.5) / r, (tile_size - t - 0.5) / r), r = max(overlap, 1): ramps up over the overlap, so
    two neighbours overlapping by exactly `overlap` pixels cross-fade linearly there.
    """
    if blend not in BLENDS:
        raise ValueError(f"unknown blend {blend!r}; valid: {', '.join(BLENDS)}")
    t = np.arange(tile_size, dtype=np.float64)
    if blend == "gaussian":
        centre, sigma = (tile_size - 1) / 2, gaussian_sigma * tile_size
        profile = np.exp(-((t - centre) ** 2) / (2 * sigma ** 2))
    else:
        ramp = max(overlap, 1)
        profile = np.minimum(1.0, np.minimum((t + 0.5) / ramp, (tile_size - t - 0.5) / ramp))
    return np.outer(profile, profile).astype(np.float32)


def padded_size(height: int, width: int, *, tile_size: int, align: int = 1) -> tuple[int, int]:
    """(height, width) pixels after padding at the bottom/right to a multiple of `align` (as the model pads the
    whole image) and, where shorter, to one tile."""
    return tuple(max(-(-side // align) * align, tile_size) for side in (height, width))


def normalized_tile(image: np.ndarray, top: int, left: int, *, tile_size: int, mean: Sequence[float],
                    std: Sequence[float]) -> np.ndarray:
    """float32 `[tile_size, tile_size, 3]`: the tile of uint8 `image` `[H, W, 3]` at (top, left), normalised as the
    eval pipeline normalises (`augment.normalize`), zero beyond the image."""
    window = image[top:top + tile_size, left:left + tile_size]
    tile = np.zeros((tile_size, tile_size, 3), np.float32)
    tile[:window.shape[0], :window.shape[1]] = augment.normalize(window, mean=mean, std=std)
    return tile


def tile_batches(image: np.ndarray, *, tile_size: int, overlap: int, align: int, batch_size: int,
                 mean: Sequence[float], std: Sequence[float]) -> Iterator[tuple[np.ndarray, list[tuple[int, int]]]]:
    """Normalised tiles of uint8 `image` `[H, W, 3]`, `batch_size` at a time: `(tiles float32 [batch_size, T, T, 3],
    corners)`; the last batch is filled up with zero tiles (one compiled shape) and `corners` lists the real ones."""
    corners = tile_corners(*padded_size(*image.shape[:2], tile_size=tile_size, align=align), tile_size=tile_size,
                           overlap=overlap, align=align)
    for first in range(0, len(corners), batch_size):
        chunk = corners[first:first + batch_size]
        tiles = np.zeros((batch_size, tile_size, tile_size, 3), np.float32)
        for i, (top, left) in enumerate(chunk):
            tiles[i] = normalized_tile(image, top, left, tile_size=tile_size, mean=mean, std=std)
        yield tiles, chunk


def blended_logits(image: np.ndarray, predict_tiles: Callable[[np.ndarray], Any], *, tile_size: int, overlap: int,
                   align: int, weights: np.ndarray, batch_size: int, mean: Sequence[float],
                   std: Sequence[float]) -> np.ndarray:
    """float32 `[H, W, N]` logits of uint8 `image` `[H, W, 3]`: each tile's logits (`predict_tiles(tiles [b, T, T, 3])
    -> [b, T, T, N]`) weighted by `weights` `[T, T]`, summed where tiles overlap and divided by the summed weights."""
    height, width = image.shape[:2]
    total: np.ndarray | None = None
    weight_sum = np.zeros(padded_size(height, width, tile_size=tile_size, align=align), np.float32)
    for tiles, corners in tile_batches(image, tile_size=tile_size, overlap=overlap, align=align,
                                       batch_size=batch_size, mean=mean, std=std):
        logits = np.asarray(predict_tiles(tiles), np.float32)
        if total is None:
            total = np.zeros((*weight_sum.shape, logits.shape[-1]), np.float32)
        for tile_logits, (top, left) in zip(logits, corners):
            total[top:top + tile_size, left:left + tile_size] += tile_logits * weights[..., None]
            weight_sum[top:top + tile_size, left:left + tile_size] += weights
    total = total[:height, :width]
    total /= weight_sum[:height, :width, None]
    return total
