"""Feature Pyramid Network (Lin et al. 2017): a top-down pathway with lateral connections."""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from seg_jax.models.layers import Conv


def upsample_nearest_2x(x: jax.Array) -> jax.Array:
    """[B, H, W, C] → [B, 2H, 2W, C], each cell repeated 2×2 (the paper's nearest-neighbour upsampling)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class FPN(nn.Module):
    """Backbone maps C_l (stride 2**l, l = min_level, ...) → P_l with `features` channels each.

    P_top = conv3×3(lateral(C_top)); P_l = conv3×3(lateral(C_l) + upsample2×(merged_{l+1})), lateral a 1×1 conv.
    Every input must be exactly twice the size of the next. With `extra_level`, one more map P_{top+1} is the
    stride-2 subsample of P_top (torchvision's `LastLevelMaxPool`, a 1×1 max-pool), used by the RPN only.

    Returns:
      list of [B, H_l, W_l, features] maps, finest first.
    """
    features: int = 32
    extra_level: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, inputs: Sequence[jax.Array]) -> list[jax.Array]:
        laterals = [Conv(self.features, (1, 1), dtype=self.dtype, name=f"lateral{i}")(c)
                    for i, c in enumerate(inputs)]
        merged = [laterals[-1]]
        for lateral in reversed(laterals[:-1]):
            merged.insert(0, lateral + upsample_nearest_2x(merged[0]))
        outputs = [Conv(self.features, (3, 3), padding=1, dtype=self.dtype, name=f"output{i}")(m)
                   for i, m in enumerate(merged)]
        if self.extra_level:
            outputs.append(outputs[-1][:, ::2, ::2])
        return outputs
