"""Boundary accuracy: how well predictions follow object edges (trimap accuracy)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from seg_jax.labels import IGNORE_INDEX


def boundary_band(labels: jax.Array, *, width: int, ignore_index: int = IGNORE_INDEX) -> jax.Array:
    """Pixels within `width` px (Chebyshev distance) of a change of true label: bool `[B, H, W]`.

    Args:
      labels: int `[B, H, W]`; ignored pixels are never in the band, and a change to or from the
        ignore label is not an edge (the trimap evaluation of Kohli et al. 2009, as used for
        dense-CRF results by Krähenbühl & Koltun 2011).
    """
    valid = labels != ignore_index
    pad = jnp.pad(labels, ((0, 0), (1, 1), (1, 1)), mode="edge")
    vpad = jnp.pad(valid, ((0, 0), (1, 1), (1, 1)), mode="edge")
    edge = jnp.zeros(labels.shape, bool)
    h, w = labels.shape[1:]
    for dy, dx in ((0, 1), (1, 0), (2, 1), (1, 2)):  # 4-neighbours
        other = pad[:, dy:dy + h, dx:dx + w]
        other_valid = vpad[:, dy:dy + h, dx:dx + w]
        edge |= (other != labels) & valid & other_valid
    band = jax.lax.reduce_window(edge.astype(jnp.float32), 0.0, jax.lax.max, (1, 2 * width + 1, 2 * width + 1),
                                 (1, 1, 1), "SAME") > 0
    return band & valid


def boundary_counts(predictions: jax.Array, labels: jax.Array, *, width: int, ignore_index: int = IGNORE_INDEX,
                    example_mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """(correct, total) int32 pixel counts inside the boundary band; accuracy = correct / total.

    Args:
      predictions, labels: int `[B, H, W]`.
      example_mask: optional `[B]`, 0 for padded examples.
    """
    band = boundary_band(labels, width=width, ignore_index=ignore_index)
    if example_mask is not None:
        band &= example_mask[:, None, None] > 0
    correct = jnp.sum(band & (predictions == labels))
    return correct.astype(jnp.int32), jnp.sum(band).astype(jnp.int32)
