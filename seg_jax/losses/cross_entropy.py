"""Softmax cross-entropy with ignore label, per-pixel weight maps and per-class weights."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from seg_jax.losses.common import global_normalizer, pixel_weights
from seg_jax.labels import IGNORE_INDEX


def softmax_cross_entropy(
        logits: jax.Array,
        labels: jax.Array,
        *,
        weights: jax.Array | None = None,
        class_weights: jax.Array | None = None,
        ignore_index: int = IGNORE_INDEX,
        axis_name: str | None = None,
) -> jax.Array:
    """Weighted mean cross-entropy Σ(w·ce) / Σw over non-ignored pixels.

    With w = class_weights[label] · weights (each factor 1 when not given), this is the
    number `torch.nn.functional.cross_entropy(weight=class_weights, ignore_index=...,
    reduction='mean')` gives when `weights` is None: normalised by the sum of the weights,
    not by the pixel count.

    Args:
        logits: float `[B, H, W, N]`.
        labels: int `[B, H, W]` in `[0, N)` or `ignore_index`.
        weights: optional float `[B, H, W]` per-pixel weights (e.g. the U-Net boundary map).
        class_weights: optional float `[N]`.
        ignore_index: label value that contributes nothing.
        axis_name: inside `pmap`, the device axis. The denominator is then summed over all
            devices, and the result scaled so that the `pmean` over devices equals the loss of the
            whole global batch (exact data parallelism even when devices hold different weight sums).

    Returns:
        float32 scalar; 0 with zero gradient when every pixel is ignored.
    """
    logits = logits.astype(jnp.float32)
    w = pixel_weights(labels, num_classes=logits.shape[-1], weights=weights,
                                        class_weights=class_weights, ignore_index=ignore_index)
    safe_labels = jnp.where(w > 0, labels, 0)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(log_p, safe_labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return jnp.sum(w * nll) / global_normalizer(jnp.sum(w), axis_name=axis_name)
