"""Axis-aligned boxes: areas, IoU, clipping, delta coding and FPN anchors.

Boxes are (x1, y1, x2, y2) in pixels, float, with x along the width. Widths are ``x2 - x1`` (no "+1"), as in
torchvision and Detectron2.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax.numpy as jnp
import numpy as np

Array = jnp.ndarray

DEFAULT_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
DEFAULT_DELTA_CLIP = math.log(1000.0 / 16)


def box_area(boxes: Array) -> Array:
    """Areas ``[...]`` in pixels² of boxes ``[..., 4]``; degenerate boxes (x2 < x1) give a non-positive area."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(a: Array, b: Array) -> Array:
    """Intersection over union ``[N, M]`` float of boxes ``a [N, 4]`` and ``b [M, 4]``.

    A pair whose union is empty (two zero-area boxes) has IoU 0 rather than torchvision's NaN.
    """
    top_left = jnp.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = jnp.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = jnp.clip(bottom_right - top_left, 0.0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)


def clip_boxes(boxes: Array, height: float | Array, width: float | Array) -> Array:
    """Clamps boxes ``[..., 4]`` to the image ``[0, width] × [0, height]`` (pixels)."""
    x = jnp.clip(boxes[..., 0::2], 0.0, width)
    y = jnp.clip(boxes[..., 1::2], 0.0, height)
    return jnp.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], axis=-1)


def _centres_and_sizes(boxes: Array) -> tuple[Array, Array, Array, Array]:
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * widths, boxes[..., 1] + 0.5 * heights, widths, heights


def encode_boxes(boxes: Array, anchors: Array, *,
                 weights: Sequence[float] = DEFAULT_WEIGHTS) -> Array:
    """Regression targets ``[..., 4]`` (dx, dy, dw, dh) that take ``anchors [..., 4]`` to ``boxes [..., 4]``.

    dx = wx · (x_box − x_anchor) / w_anchor (centres), dw = ww · log(w_box / w_anchor), likewise for y and h — the
    torchvision / Detectron2 ``BoxCoder`` convention. The RoI heads use weights (10, 10, 5, 5); both libraries code
    RPN deltas with (1, 1, 1, 1). Anchors and boxes must have positive sizes.
    """
    wx, wy, ww, wh = weights
    bx, by, bw, bh = _centres_and_sizes(boxes)
    ax, ay, aw, ah = _centres_and_sizes(anchors)
    return jnp.stack([wx * (bx - ax) / aw, wy * (by - ay) / ah,
                      ww * jnp.log(bw / aw), wh * jnp.log(bh / ah)], axis=-1)


def decode_boxes(deltas: Array, anchors: Array, *, weights: Sequence[float] = DEFAULT_WEIGHTS,
                 clip: float = DEFAULT_DELTA_CLIP) -> Array:
    """Boxes ``[..., 4]`` from deltas ``[..., 4]`` and ``anchors [..., 4]``; inverse of :func:`encode_boxes`.

    dw/ww and dh/wh are clamped to at most ``clip`` (default log(1000/16)) so exp() cannot overflow, as in torchvision.
    """
    wx, wy, ww, wh = weights
    ax, ay, aw, ah = _centres_and_sizes(anchors)
    dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
    dw = jnp.minimum(deltas[..., 2] / ww, clip)
    dh = jnp.minimum(deltas[..., 3] / wh, clip)
    cx, cy = ax + dx * aw, ay + dy * ah
    half_w, half_h = 0.5 * aw * jnp.exp(dw), 0.5 * ah * jnp.exp(dh)
    return jnp.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=-1)


def generate_anchors(*, feature_sizes: Sequence[tuple[int, int]], strides: Sequence[int],
                     sizes: Sequence[Sequence[float]],
                     aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0)) -> list[np.ndarray]:
    """Anchors per FPN level, as torchvision's ``AnchorGenerator``.

    Args:
      feature_sizes: (height, width) of each level's feature map, in cells.
      strides: each level's stride, in input pixels per cell.
      sizes: each level's anchor sizes (sqrt of the area, in input pixels), e.g. ((32,), (64,), ...).
      aspect_ratios: height / width ratios, shared by every level.
    Returns:
      One float32 array ``[H_l · W_l · A_l, 4]`` per level, A_l = len(sizes[l]) · len(aspect_ratios); rows are
      ordered cell-major (row, column), then aspect ratio, then size. The anchor of cell (i, j) is centred on
      (j · stride, i · stride) and its corners are rounded to whole pixels, as torchvision does.
    """
    if not len(feature_sizes) == len(strides) == len(sizes):
        raise ValueError(f"generate_anchors: feature_sizes ({len(feature_sizes)}), strides ({len(strides)}) and "
                         f"sizes ({len(sizes)}) must have one entry per FPN level")
    ratios = np.asarray(aspect_ratios, np.float64)
    anchors = []
    for (height, width), stride, level_sizes in zip(feature_sizes, strides, sizes):
        scales = np.asarray(level_sizes, np.float64)
        h_ratios = np.sqrt(ratios)
        ws = (scales[None, :] / h_ratios[:, None]).reshape(-1)
        hs = (scales[None, :] * h_ratios[:, None]).reshape(-1)
        base = np.round(np.stack([-ws, -hs, ws, hs], axis=1) / 2)
        ys, xs = np.meshgrid(np.arange(height) * stride, np.arange(width) * stride, indexing="ij")
        shifts = np.stack([xs, ys, xs, ys], axis=-1).reshape(-1, 1, 4)
        anchors.append((shifts + base[None]).reshape(-1, 4).astype(np.float32))
    return anchors
