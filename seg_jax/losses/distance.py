"""Regression of the per-instance distance map (`data.distance_target`) on foreground pixels."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from seg_jax.losses.common import global_normalizer

PENALTIES = ("l1", "l2")


def distance_loss(
        distance: jax.Array,
        target: jax.Array,
        *,
        weights: jax.Array | None = None,
        penalty: str = "l1",
        axis_name: str | None = None,
) -> jax.Array:
    """Mean error Σ(w·e) / Σw of the predicted distance over the foreground pixels (`target > 0`).

    Background pixels carry no loss: there the foreground probability, not the distance, decides, so the
    distance channel spends its capacity on the valleys between touching instances.

    Args:
        distance: float `[B, H, W]`, the model's distance channel (a linear output, no squashing).
        target: float `[B, H, W]` in [0, 1], 0 on background (`seg_jax.data.derived.targets.instance_distance`).
        weights: optional float `[B, H, W]`; 0 excludes a pixel (ignored labels, padding), other values weigh it.
        penalty: "l1" (e = |distance - target|) or "l2" (e = (distance - target)², the mean squared error).
        axis_name: inside `pmap`, the device axis: the denominator is summed over devices, as for
            `softmax_cross_entropy`, so the `pmean` of the result is the loss of the whole global batch.

    Returns:
        float32 scalar; 0 with zero gradient when no pixel is foreground.
    """
    if penalty not in PENALTIES:
        raise ValueError(f"loss 'distance': penalty {penalty!r} is not one of {', '.join(PENALTIES)}")
    target = target.astype(jnp.float32)
    w = (target > 0).astype(jnp.float32)
    if weights is not None:
        w = w * weights.astype(jnp.float32)
    w = jax.lax.stop_gradient(w)
    error = distance.astype(jnp.float32) - target
    error = jnp.abs(error) if penalty == "l1" else jnp.square(error)
    return jnp.sum(w * error) / global_normalizer(jnp.sum(w), axis_name=axis_name)
