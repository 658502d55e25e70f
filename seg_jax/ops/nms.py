"""Greedy non-maximum suppression with static shapes, for use under ``jit``."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from seg_jax.compiled import compiled
from seg_jax.ops.boxes import box_iou

Array = jnp.ndarray


@compiled(static=("max_output_size", "tile_size"))
def nms(boxes: Array, scores: Array, *, iou_threshold: float, max_output_size: int,
        valid: Array | None = None, tile_size: int = 512) -> tuple[Array, Array]:
    """Greedy NMS selecting the same boxes in the same order as ``torchvision.ops.nms``.

    Boxes are visited by decreasing score (a stable sort, so ties keep their input order, as torchvision's); a box is
    kept unless a kept box overlaps it with IoU > ``iou_threshold``.

    Args:
      boxes: ``[N, 4]`` (x1, y1, x2, y2) float.
      scores: ``[N]`` float.
      max_output_size: static number of output slots; selection stops once they are full.
      valid: optional ``[N]`` bool; invalid (padding) boxes are never kept and suppress nothing.
      tile_size: boxes decided per step (speed only; the result does not depend on it). Memory is
        O(tile_size · N).
    Returns:
      ``(indices [max_output_size] int32, valid [max_output_size] bool)``: indices into ``boxes`` of the kept boxes
      by decreasing score; unused slots hold index 0 and ``False``.
    """
    n = boxes.shape[0]
    tile = max(1, min(tile_size, n))
    num_tiles = -(-n // tile)
    order = jnp.argsort(scores, descending=True, stable=True)
    sorted_boxes = jnp.pad(boxes[order], ((0, num_tiles * tile - n), (0, 0)))
    candidate = jnp.ones((n,), bool) if valid is None else valid[order]
    candidate = jnp.pad(candidate, (0, num_tiles * tile - n))
    position = jnp.arange(num_tiles * tile)
    before = jnp.arange(tile)[:, None] < jnp.arange(tile)[None, :]

    # Boxes are decided a tile at a time, in score order. A tile's box is first dropped if a kept box of an earlier
    # tile overlaps it; the survivors then solve keep[j] = alive[j] and no kept i < j of the tile overlaps j. That
    # equation fixes keep[j] from keep[:j], so its only solution is the greedy one, and iterating it from
    # keep = alive reaches it after at most (length of the longest suppression chain) steps, usually a few — instead
    # of one sequential step per box.
    def decide_tile(state):
        t, keep = state
        start = t * tile
        tile_boxes = jax.lax.dynamic_slice_in_dim(sorted_boxes, start, tile)
        overlaps = box_iou(tile_boxes, sorted_boxes) > iou_threshold  # [tile, N]
        earlier = keep & (position < start)
        alive = jax.lax.dynamic_slice_in_dim(keep, start, tile) & ~jnp.any(overlaps & earlier[None, :], axis=1)
        inner = jax.lax.dynamic_slice_in_dim(overlaps, start, tile, axis=1) & before

        def settle(carry):
            tile_keep, _ = carry
            new = alive & ~jnp.any(inner & tile_keep[:, None], axis=0)
            return new, jnp.any(new != tile_keep)

        tile_keep, _ = jax.lax.while_loop(lambda carry: carry[1], settle, (alive, jnp.bool_(True)))
        return t + 1, jax.lax.dynamic_update_slice_in_dim(keep, tile_keep, start, axis=0)

    def has_room(state):
        t, keep = state
        return (t < num_tiles) & (jnp.sum(keep & (position < t * tile)) < max_output_size)

    # Tiles never reached still hold their candidates, but the loop only stops early once the decided tiles fill
    # every slot, so those candidates lie past the slots that are read.
    _, keep = jax.lax.while_loop(has_room, decide_tile, (jnp.int32(0), candidate))
    (slots,) = jnp.nonzero(keep, size=max_output_size, fill_value=0)
    out_valid = jnp.arange(max_output_size) < jnp.sum(keep)
    return jnp.where(out_valid, order[jnp.minimum(slots, n - 1)], 0).astype(jnp.int32), out_valid


@compiled(static=("max_output_size", "tile_size"))
def batched_nms(boxes: Array, scores: Array, classes: Array, *, iou_threshold: float, max_output_size: int,
                valid: Array | None = None, tile_size: int = 512) -> tuple[Array, Array]:
    """NMS within each class, by torchvision's coordinate-offset trick (one :func:`nms` over shifted boxes).

    Args:
      boxes: ``[N, 4]``; scores: ``[N]``; classes: ``[N]`` int, boxes of different classes never suppress each other.
      valid: optional ``[N]`` bool marking real (non-padding) boxes.
    Returns:
      As :func:`nms`: kept indices ``[max_output_size]`` int32 by decreasing score, and their validity.
    """
    real = jnp.ones(scores.shape, bool) if valid is None else valid
    # Shift class c by c · (span + 1) so that boxes of different classes cannot overlap; using the span (not only the
    # maximum as torchvision does) keeps this true for negative coordinates too.
    low = jnp.min(jnp.where(real[:, None], boxes, jnp.inf))
    high = jnp.max(jnp.where(real[:, None], boxes, -jnp.inf))
    span = jnp.where(jnp.any(real), high - low, 0.0)
    shifted = boxes + (classes.astype(boxes.dtype) * (span + 1.0))[:, None]
    return nms(shifted, scores, iou_threshold=iou_threshold, max_output_size=max_output_size, valid=valid,
               tile_size=tile_size)
