"""ResNet backbone with basic blocks (He et al. 2016), sized by per-stage depths and widths.

Stem: 7×7 stride-2 conv → norm → ReLU → 2×2 stride-2 max-pool (the paper pools 3×3 with padding; 2×2 keeps the
CPU-fast `max_pool_2x2`). Stage s (0-based) then has `depths[s]` basic blocks of `widths[s]` channels; stages after
the first start with a stride-2 block, so stage s outputs C_{s+2} at stride 2**(s+2) — the C2..C5 of the FPN paper
for four stages. ResNet-18 is depths (2, 2, 2, 2), widths (64, 128, 256, 512).
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from seg_jax.models.layers import conv_kernel_init, make_norm, max_pool_2x2


class BasicBlock(nn.Module):
    """Two 3×3 conv-norm layers plus a shortcut, then ReLU: [B, H, W, C] → [B, H/s, W/s, features], s = strides.

    The shortcut is a 1×1 strided conv + norm when the shape changes (the paper's option B), else the identity.
    """
    features: int
    strides: int = 1
    norm: str = "group"
    norm_axis_name: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        conv = functools.partial(nn.Conv, self.features, use_bias=self.norm == "none", kernel_init=conv_kernel_init,
                                 dtype=self.dtype)
        norm = functools.partial(make_norm, self.norm, features=self.features, train=train,
                                 axis_name=self.norm_axis_name, dtype=self.dtype)
        # Symmetric padding 1 (as torchvision), not "SAME", whose stride-2 padding is lopsided on even inputs.
        y = nn.relu(norm()(conv((3, 3), strides=self.strides, padding=1)(x)))
        y = norm()(conv((3, 3), padding=1)(y))
        if self.strides != 1 or x.shape[-1] != self.features:
            x = norm()(conv((1, 1), strides=self.strides)(x))
        return nn.relu(x + y)


class ResNet(nn.Module):
    """float [B, H, W, 3] → one feature map per stage: [B, H / 2**(s+2), W / 2**(s+2), widths[s]], s = 0, 1, ...

    H and W must be multiples of 2**(len(widths) + 1) (MaskRCNN pads its input so).

    Attributes:
        depths: basic blocks per stage.
        widths: channels per stage (the stem has widths[0]).
        norm: "group", "batch", "layer" or "none" (`seg_jax.models.layers.NORMS`).
        norm_axis_name: BatchNorm's cross-device axis name (e.g. "batch" inside `jax.pmap`), or None.
        dtype: compute dtype; parameters stay float32.
    """
    depths: Sequence[int] = (1, 1, 1, 1)
    widths: Sequence[int] = (16, 32, 64, 128)
    norm: str = "group"
    norm_axis_name: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> list[jax.Array]:
        if len(self.depths) != len(self.widths) or not self.depths:
            raise ValueError(f"ResNet: depths {tuple(self.depths)} and widths {tuple(self.widths)} must be non-empty "
                             "and give one entry per stage")
        x = nn.Conv(self.widths[0], (7, 7), strides=2, padding=3, use_bias=self.norm == "none",
                    kernel_init=conv_kernel_init, dtype=self.dtype, name="stem")(x.astype(self.dtype))
        x = make_norm(self.norm, features=self.widths[0], train=train, axis_name=self.norm_axis_name,
                      dtype=self.dtype)(x)
        x = max_pool_2x2(nn.relu(x))
        block = functools.partial(BasicBlock, norm=self.norm, norm_axis_name=self.norm_axis_name, dtype=self.dtype)
        outputs = []
        for stage, (depth, width) in enumerate(zip(self.depths, self.widths)):
            for index in range(depth):
                strides = 2 if stage > 0 and index == 0 else 1
                x = block(width, strides=strides, name=f"stage{stage}_block{index}")(x, train=train)
            outputs.append(x)
        return outputs
