"""Geometric warps of an example: rotation by any angle and the U-Net paper's elastic deformation (numpy + scipy).

A warp is a map from every output pixel to the source coordinates it samples: `rows`, `cols` float64 [h, w],
pixel centres at integer coordinates (row 0 at the top). `resample` applies one map to every spatial key
(`augment.SPATIAL_KEYS`): the image bilinearly, label / instances / weights by their nearest pixel, so no label
value is ever interpolated. An output pixel whose nearest source pixel lies outside the example gets the padding
value of `augment.pad` (ignore index in labels, 0 elsewhere) in every key, so the keys stay aligned. Maps compose
by feeding one's output coordinates to the next (`rotate_points(*elastic_points(...))`), sampling only once.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from seg_jax.data.pipeline.augment import SPATIAL_KEYS

Points = tuple[np.ndarray, np.ndarray]  # rows, cols: float64 [h, w] source coordinates in pixels


def identity_points(size: tuple[int, int]) -> Points:
    """The map of no warp: every output pixel samples itself, for an output of `size` = (height, width)."""
    rows, cols = np.indices(size, dtype=np.float64)
    return rows, cols


def rotate_points(points: Points, *, degrees: float, size: tuple[int, int]) -> Points:
    """`points` taken through a rotation of the content by `degrees` counter-clockwise (as shown, rows down)
    about the centre ((h - 1) / 2, (w - 1) / 2) of an image of `size` = (h, w): where each point samples from.

    By a multiple of 90 degrees on a square image this is `np.rot90` exactly (pixel centres map to pixel centres).
    """
    rows, cols = points
    centre_row, centre_col = (size[0] - 1) / 2, (size[1] - 1) / 2
    theta = np.deg2rad(degrees)
    cos, sin = np.cos(theta), np.sin(theta)
    x, y = cols - centre_col, centre_row - rows  # y up, so counter-clockwise is the positive angle
    # The source of an output point is the inverse rotation of it (by -theta).
    source_x = cos * x + sin * y
    source_y = -sin * x + cos * y
    return centre_row - source_y, centre_col + source_x


def _cardinal_splines(count: int, length: int) -> np.ndarray:
    """float64 [length, count]: the cubic (at most order count - 1) interpolating spline through `count` control
    points spanning `length` pixels, as a matrix: column i is the spline through the unit impulse at point i."""
    where = np.linspace(0, count - 1, length)[None]
    order = min(3, count - 1)  # a spline of order k needs k + 1 points
    return np.stack([ndimage.map_coordinates(impulse, where, order=order, mode="nearest")
                     for impulse in np.eye(count)], axis=-1)


def elastic_field(displacements: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float64 [2, h, w] per-pixel (row, col) displacements in pixels from `displacements` [2, g, g] given at a
    g x g grid of control points whose outer ones sit on the corner pixels of an image of `size` = (h, w),
    interpolated by a cubic spline (the U-Net paper's bicubic interpolation of a coarse grid)."""
    # The 2-D spline is the tensor product of 1-D ones: rows (h x g) @ grid (g x g) @ cols (g x w).
    rows = _cardinal_splines(displacements.shape[1], size[0])
    cols = _cardinal_splines(displacements.shape[2], size[1])
    return np.einsum("hi,dij,wj->dhw", rows, displacements.astype(np.float64), cols)


def elastic_points(points: Points, displacements: np.ndarray, *, size: tuple[int, int]) -> Points:
    """`points` moved by the elastic field of `displacements` [2, g, g] (`elastic_field`) over `size`."""
    field = elastic_field(displacements, size)
    return points[0] + field[0], points[1] + field[1]


def resample(example: dict[str, Any], points: Points, *, ignore_index: int) -> dict[str, Any]:
    """Example whose spatial keys are sampled at `points` ([h, w] source coordinates), dtypes kept (the image is
    rounded back to uint8 when it is uint8); see the module docstring for interpolation and padding."""
    rows, cols = points
    height, width = example["image"].shape[:2]
    near_rows, near_cols = np.floor(rows + 0.5).astype(np.intp), np.floor(cols + 0.5).astype(np.intp)
    outside = (near_rows < 0) | (near_rows >= height) | (near_cols < 0) | (near_cols >= width)
    near_rows, near_cols = np.clip(near_rows, 0, height - 1), np.clip(near_cols, 0, width - 1)
    out = dict(example)
    flat_index = near_rows * width + near_cols
    for key in SPATIAL_KEYS:
        if key not in out:
            continue
        if key == "image":
            value = _bilinear(out[key], rows, cols)
        else:  # a flat take: several times faster than indexing with two arrays
            value = np.take(out[key].reshape((height * width,) + out[key].shape[2:]), flat_index, axis=0)
        value[outside] = ignore_index if key == "label" else 0
        out[key] = value
    return out


def _bilinear(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """image [H, W, C] sampled bilinearly at (rows, cols) [h, w], the edge pixels extended (outside is masked
    after); a uint8 image is rounded back to uint8."""
    where = np.stack([rows, cols])
    value = np.stack([ndimage.map_coordinates(image[..., c], where, order=1, mode="nearest", output=np.float32)
                      for c in range(image.shape[-1])], axis=-1)
    if image.dtype == np.uint8:
        return np.clip(np.rint(value), 0, 255).astype(np.uint8)
    return value.astype(image.dtype)
