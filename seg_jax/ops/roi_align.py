"""RoIAlign (He et al., Mask R-CNN) with torchvision's sampling rule, by vectorised gathers.

All three entry points share one kernel, :func:`_pool_flat`, which reads features flattened to ``[N, C]`` with a
per-box offset, height and width, so one image out of a batch, one FPN level out of several, or one instance mask
out of many is chosen by the same gather. Gradients flow to the features (a scatter-add) and, through the bilinear
weights, to the boxes; torchvision gives boxes no gradient, so pass ``lax.stop_gradient(boxes)`` to match it.
"""
from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp

from seg_jax.compiled import compiled
from seg_jax.ops.boxes import box_area

Array = jnp.ndarray


def _output_hw(output_size: int | Sequence[int]) -> tuple[int, int]:
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"roi_align: output_size must be a positive int or an (out_h, out_w) pair of positive ints, "
                         f"got {output_size!r}")
    return size


def _check_sampling_ratio(sampling_ratio: int) -> None:
    if not isinstance(sampling_ratio, int) or sampling_ratio <= 0:
        raise ValueError(f"roi_align: sampling_ratio must be a positive int (torchvision's adaptive "
                         f"ceil(roi / output) grid, sampling_ratio <= 0, has no static shape), got {sampling_ratio!r}")


def _axis_samples(start: Array, bin_size: Array, length: Array, *, out: int, grid: int) -> tuple[Array, Array]:
    """Bilinear taps along one axis: indices ``[K, out·grid, 2]`` int32 and weights ``[K, out·grid, 2]`` float32.

    Follows torchvision's ``bilinear_interpolate``: a sample outside [−1, length] weighs 0, a sample in [−1, 0] is
    moved to 0, and a sample past the last cell reads that cell only.
    """
    steps = (jnp.arange(out)[:, None] + (jnp.arange(grid)[None, :] + 0.5) / grid).reshape(-1)
    coord = start[:, None] + steps[None, :] * bin_size[:, None]
    length = length[:, None]
    inside = (coord >= -1.0) & (coord <= length)
    coord = jnp.maximum(coord, 0.0)
    low = jnp.floor(coord).astype(jnp.int32)
    at_edge = low >= length - 1
    low = jnp.where(at_edge, length - 1, low)
    high = jnp.where(at_edge, low, low + 1)
    frac = jnp.where(at_edge, 0.0, coord - low)
    weights = jnp.stack([1.0 - frac, frac], axis=-1) * inside[..., None]
    return jnp.stack([low, high], axis=-1), weights


def _pool_flat(flat: Array, boxes: Array, *, offset: Array, height: Array, width: Array, scale: Array,
               out_hw: tuple[int, int], sampling_ratio: int, aligned: bool) -> Array:
    """RoIAlign of boxes ``[K, 4]`` over the maps stored row-major in ``flat [N, C]`` → ``[K, out_h, out_w, C]``.

    Box k reads the ``height[k] × width[k]`` map that starts at row ``offset[k]`` of ``flat``, with its coordinates
    multiplied by ``scale[k]``.
    """
    out_h, out_w = out_hw
    grid = sampling_ratio
    boxes = boxes.astype(jnp.float32) * scale[:, None]
    boxes = boxes - (0.5 if aligned else 0.0)
    roi_w = boxes[:, 2] - boxes[:, 0]
    roi_h = boxes[:, 3] - boxes[:, 1]
    if not aligned:  # torchvision's legacy rule: RoIs at least one cell wide.
        roi_w, roi_h = jnp.maximum(roi_w, 1.0), jnp.maximum(roi_h, 1.0)
    y_idx, y_wt = _axis_samples(boxes[:, 1], roi_h / out_h, height, out=out_h, grid=grid)
    x_idx, x_wt = _axis_samples(boxes[:, 0], roi_w / out_w, width, out=out_w, grid=grid)
    # [K, Sy, Sx, 2, 2]: the four corners of every sample.
    index = (offset[:, None, None, None, None] + y_idx[:, :, None, :, None] * width[:, None, None, None, None]
             + x_idx[:, None, :, None, :])
    weight = y_wt[:, :, None, :, None] * x_wt[:, None, :, None, :]
    k = boxes.shape[0]
    weight = weight.reshape(k, out_h, grid, out_w, grid, 2, 2, 1) / (grid * grid)
    values = flat[index].reshape(k, out_h, grid, out_w, grid, 2, 2, flat.shape[-1])
    # One reduction over the grid and the corners (XLA fuses the gather into it).
    return jnp.sum(values * weight, axis=(2, 4, 5, 6)).astype(flat.dtype)


@compiled(static=("output_size", "sampling_ratio", "aligned"))
def roi_align_indexed(features: Array, boxes: Array, image_index: Array, *, output_size: int | Sequence[int],
                      spatial_scale: float = 1.0, sampling_ratio: int = 2, aligned: bool = True) -> Array:
    """RoIAlign where each box names its image, like torchvision's ``roi_align`` with ``[K, 5]`` RoIs.

    Args:
      features: ``[N, H, W, C]`` maps (any float dtype; the output has the same dtype).
      boxes: ``[K, 4]`` (x1, y1, x2, y2) in input pixels; ``spatial_scale`` maps them to feature cells.
      image_index: ``[K]`` int, which of the N maps each box reads.
      output_size: an int or an (out_h, out_w) pair (static).
      sampling_ratio: samples per output bin along each axis (static, > 0).
      aligned: shift by half a cell (True) or torchvision's legacy rule with a minimum RoI size of one cell.
    Returns:
      ``[K, out_h, out_w, C]``, the same numbers as ``torchvision.ops.roi_align``.
    """
    out_hw = _output_hw(output_size)
    _check_sampling_ratio(sampling_ratio)
    if features.ndim != 4 or boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"roi_align: expected features [N, H, W, C] and boxes [K, 4], got features "
                         f"{features.shape} and boxes {boxes.shape}")
    n, h, w, c = features.shape
    k = boxes.shape[0]
    full = lambda v: jnp.full((k,), v)
    return _pool_flat(features.reshape(n * h * w, c), boxes, offset=jnp.asarray(image_index, jnp.int32) * (h * w),
                      height=full(h), width=full(w), scale=full(spatial_scale).astype(jnp.float32),
                      out_hw=out_hw, sampling_ratio=sampling_ratio, aligned=aligned)


@compiled(static=("output_size", "sampling_ratio", "aligned"))
def roi_align(features: Array, boxes: Array, *, output_size: int | Sequence[int], spatial_scale: float = 1.0,
              sampling_ratio: int = 2, aligned: bool = True) -> Array:
    """RoIAlign of a batch: features ``[B, H, W, C]``, boxes ``[B, K, 4]`` → ``[B, K, out_h, out_w, C]``.

    Boxes are (x1, y1, x2, y2) in input pixels; see :func:`roi_align_indexed` for the options.
    """
    if features.ndim != 4 or boxes.ndim != 3 or boxes.shape[0] != features.shape[0]:
        raise ValueError(f"roi_align: expected features [B, H, W, C] and boxes [B, K, 4] with the same B, got "
                         f"features {features.shape} and boxes {boxes.shape}")
    b, k = boxes.shape[:2]
    pooled = roi_align_indexed(features, boxes.reshape(b * k, 4), jnp.repeat(jnp.arange(b), k),
                               output_size=output_size, spatial_scale=spatial_scale,
                               sampling_ratio=sampling_ratio, aligned=aligned)
    return pooled.reshape(b, k, *pooled.shape[1:])


def fpn_levels(boxes: Array, *, min_level: int, max_level: int, canonical_size: float = 224.0,
               canonical_level: int = 4) -> Array:
    """FPN level of boxes ``[..., 4]`` (pixels): floor(k0 + log2(sqrt(wh) / 224)) clamped to [min, max], int32.

    Eq. (1) of the FPN paper, with torchvision's 1e-6 added before the floor.
    """
    size = jnp.sqrt(jnp.maximum(box_area(boxes), 0.0))
    level = jnp.floor(canonical_level + jnp.log2(size / canonical_size) + 1e-6)
    return jnp.clip(level, min_level, max_level).astype(jnp.int32)


@compiled(static=("output_size", "min_level", "sampling_ratio", "aligned"))
def multilevel_roi_align(features: Sequence[Array], boxes: Array, *, output_size: int | Sequence[int],
                         min_level: int = 2, canonical_size: float = 224.0, canonical_level: int = 4,
                         sampling_ratio: int = 2, aligned: bool = True) -> Array:
    """RoIAlign over FPN levels: each box is pooled from the level :func:`fpn_levels` gives it.

    Args:
      features: one ``[B, H_l, W_l, C]`` map per level, levels ``min_level, min_level + 1, ...``; level l has
        stride 2**l input pixels (spatial scale 2**-l).
      boxes: ``[B, K, 4]`` in input pixels.
    Returns:
      ``[B, K, out_h, out_w, C]`` in the features' dtype. All levels are read by one gather, so the cost does not
      grow with the number of levels.
    """
    out_hw = _output_hw(output_size)
    _check_sampling_ratio(sampling_ratio)
    if not features or any(f.ndim != 4 or f.shape[0] != boxes.shape[0] or f.shape[-1] != features[0].shape[-1]
                           for f in features) or boxes.ndim != 3:
        raise ValueError(f"multilevel_roi_align: expected a non-empty list of [B, H_l, W_l, C] maps with one B and C, "
                         f"and boxes [B, K, 4]; got {[f.shape for f in features]} and boxes {boxes.shape}")
    b, k = boxes.shape[:2]
    max_level = min_level + len(features) - 1
    sizes = [f.shape[1] * f.shape[2] for f in features]
    starts = jnp.asarray([sum(sizes[:i]) for i in range(len(sizes))], jnp.int32)
    heights = jnp.asarray([f.shape[1] for f in features], jnp.int32)
    widths = jnp.asarray([f.shape[2] for f in features], jnp.int32)
    scales = jnp.asarray([2.0 ** -(min_level + i) for i in range(len(features))], jnp.float32)
    level = fpn_levels(boxes, min_level=min_level, max_level=max_level, canonical_size=canonical_size,
                       canonical_level=canonical_level).reshape(-1) - min_level
    flat = jnp.concatenate([f.reshape(b, -1, f.shape[-1]) for f in features], axis=1)
    image = jnp.repeat(jnp.arange(b), k)
    pooled = _pool_flat(flat.reshape(-1, flat.shape[-1]), boxes.reshape(b * k, 4),
                        offset=image * flat.shape[1] + starts[level], height=heights[level], width=widths[level],
                        scale=scales[level], out_hw=out_hw,
                        sampling_ratio=sampling_ratio, aligned=aligned)
    return pooled.reshape(b, k, *pooled.shape[1:])
