"""Soft Dice loss (per image, per class) with ignore label."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from seg_jax.losses.common import pixel_weights
from seg_jax.labels import IGNORE_INDEX


def dice_loss(
        logits: jax.Array,
        labels: jax.Array,
        *,
        weights: jax.Array | None = None,
        class_weights: jax.Array | None = None,
        ignore_index: int = IGNORE_INDEX,
        eps: float = 1e-6,
        axis_name: str | None = None,
) -> jax.Array:
    """1 − soft Dice, the per-image, per-class definition.

    p = softmax(logits), g = one_hot(labels). For every image b and class c, over the spatial
    axes with ignored pixels excluded from both sums (and each pixel scaled by `weights` when
    given): num = 2·Σ p·g, den = Σ (p + g). dice = mean over b and c of (num + eps)/(den + eps)
    (a `class_weights`-weighted mean over c when given); loss = 1 − dice.

    A class absent from an image's truth has num = 0, so it contributes eps / (Σp + eps): close
    to 0 while the network still predicts it (pushing its probabilities down) and 1 once it
    predicts it nowhere. Absent classes therefore count as "perfect" only when correctly
    absent; the loss never drops them, so its meaning does not change with batch content.

    Args:
        logits: float `[B, H, W, N]`.
        labels: int `[B, H, W]`, `ignore_index` excluded.
        weights: optional float `[B, H, W]` per-pixel weights (0 excludes a pixel).
        class_weights: optional float `[N]` weights of the mean over classes.
        ignore_index: label value excluded from both sums.
        eps: smoothing added to numerator and denominator.
        axis_name: accepted for the common loss signature; a mean over images is already exact
            under `pmean` across devices holding equal numbers of images.

    Returns:
        float32 scalar in [0, 1]; 0 with zero gradient when every pixel is ignored.
    """
    del axis_name
    num_classes = logits.shape[-1]
    m = pixel_weights(labels, num_classes=num_classes, weights=weights, ignore_index=ignore_index)
    p = jax.nn.softmax(logits.astype(jnp.float32), axis=-1) * m[..., None]
    g = jax.nn.one_hot(jnp.where(m > 0, labels, 0), num_classes) * m[..., None]
    num = 2.0 * jnp.sum(p * g, axis=(1, 2))
    den = jnp.sum(p + g, axis=(1, 2))
    dice = (num + eps) / (den + eps)  # [B, N]
    if class_weights is None:
        mean_dice = jnp.mean(dice)
    else:
        cw = jnp.asarray(class_weights, jnp.float32)
        mean_dice = jnp.mean(jnp.sum(dice * cw, axis=-1) / jnp.sum(cw))
    return 1.0 - mean_dice
