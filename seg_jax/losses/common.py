"""Pieces shared by the pixel losses: folding ignore labels and weights into one weight map."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from seg_jax.labels import IGNORE_INDEX


def pixel_weights(
        labels: jax.Array,
        *,
        num_classes: int,
        weights: jax.Array | None = None,
        class_weights: jax.Array | None = None,
        ignore_index: int = IGNORE_INDEX,
) -> jax.Array:
    """Per-pixel loss weights `[B, H, W]` float32: class_weights[label] · weights, 0 where ignored.

    Ignored pixels (and any label outside `[0, num_classes)`) get weight 0, so one weighted
    reduction handles ignore labels, class weights and weight maps alike.
    """
    valid = (labels != ignore_index) & (labels >= 0) & (labels < num_classes)
    w = valid.astype(jnp.float32)
    if class_weights is not None:
        cw = jnp.asarray(class_weights, jnp.float32)
        w = w * cw[jnp.where(valid, labels, 0)]
    if weights is not None:
        w = w * weights.astype(jnp.float32)
    return jax.lax.stop_gradient(w)


def global_normalizer(local_sum: jax.Array, *, axis_name: str | None) -> jax.Array:
    """The denominator of a weighted mean, safe at zero.

    Inside `pmap` (axis_name given) it is the weight sum over all devices divided by the
    device count, so that `pmean` over devices of `local_numerator / normalizer` equals
    `Σ numerators / Σ weights` over the global batch.
    """
    total = local_sum
    if axis_name is not None:
        total = jax.lax.psum(local_sum, axis_name) / jax.lax.psum(1.0, axis_name)
    # Zero total means no valid pixel anywhere; the numerator is zero too, so the loss is 0.
    return jnp.maximum(jax.lax.stop_gradient(total), 1e-12)
