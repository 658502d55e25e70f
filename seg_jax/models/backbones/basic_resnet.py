"""ResNet backbone with basic blocks (He et al. 2016), sized by per-stage depths and widths: the CPU-sized
configurable backbone (registered as "resnet"); `seg_jax.models.backbones.resnet` has torchvision's ResNet-50/101.

Stem: 7×7 stride-2 conv → norm → ReLU → 2×2 stride-2 max-pool (the paper pools 3×3 with padding; 2×2 keeps the
CPU-fast `max_pool_2x2`). Stage s (0-based) then has `depths[s]` basic blocks of `widths[s]` channels; stages after
the first start with a stride-2 block, so stage s outputs C_{s+2} at stride 2**(s+2) — the C2..C5 of the FPN paper
for four stages. ResNet-18 is depths (2, 2, 2, 2), widths (64, 128, 256, 512), but with the 2×2 pool its weights are
not torchvision's (no `torch_layout`).
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from seg_jax.models.layers import Conv, conv_kernel_init, make_norm, max_pool_2x2


class BasicBlock(nn.Module):
    """Two 3×3 conv-norm layers plus a shortcut, then ReLU: [B, H, W, C] → [B, H/s, W/s, features], s = strides.

    The shortcut is a 1×1 strided conv + norm when the shape changes (the paper's option B), else the identity.
    """
    features: int
    strides: int = 1
    norm: str = "group"
    freeze_bn: bool = False
    norm_axis_name: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        conv = functools.partial(Conv, self.features, use_bias=self.norm == "none", kernel_init=conv_kernel_init,
                                 dtype=self.dtype)
        norm = functools.partial(make_norm, self.norm, features=self.features, train=train and not self.freeze_bn,
                                 axis_name=self.norm_axis_name, dtype=self.dtype)
        # Symmetric padding 1 (as torchvision), not "SAME", whose stride-2 padding is lopsided on even inputs.
        y = nn.relu(norm()(conv((3, 3), strides=self.strides, padding=1)(x)))
        y = norm()(conv((3, 3), padding=1)(y))
        if self.strides != 1 or x.shape[-1] != self.features:
            x = norm()(conv((1, 1), strides=self.strides)(x))
        return nn.relu(x + y)


class ResNet(nn.Module):
    """float [B, H, W, 3] → {"C1": stem [B, H/2, W/2, widths[0]], "C{s+2}": stage s [B, H / 2**(s+2),
    W / 2**(s+2), widths[s]] for s = 0, 1, ...}, in `dtype`.

    H and W must be multiples of 2**(len(widths) + 1) (MaskRCNN pads its input so).

    Attributes:
        depths: basic blocks per stage.
        widths: channels per stage (the stem has widths[0]).
        norm: "group", "batch", "layer" or "none" (`seg_jax.models.layers.NORMS`).
        freeze_bn: BatchNorm uses (and never updates) its running statistics (detectron2's FrozenBN).
        norm_axis_name: BatchNorm's cross-device axis name (e.g. "batch" inside `jax.pmap`), or None.
        dtype: compute dtype; parameters stay float32.
    """
    depths: Sequence[int] = (1, 1, 1, 1)
    widths: Sequence[int] = (16, 32, 64, 128)
    norm: str = "group"
    freeze_bn: bool = False
    norm_axis_name: str | None = None
    dtype: Any = jnp.float32

    @property
    def num_stages(self) -> int:
        """The stem (stage 1) and one per entry of `depths` (freeze_stages counts them so)."""
        return 1 + len(self.depths)

    @staticmethod
    def stage_of(module: str) -> int:
        """The stage of a top-level module: the stem and its norm → 1, stage{s}_block{i} → s + 2."""
        return int(module[len("stage"):].split("_")[0]) + 2 if module.startswith("stage") else 1

    def is_batch_norm(self, module_path: tuple[str, ...]) -> bool:
        return module_path[-1].startswith("BatchNorm")

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> dict[str, jax.Array]:
        if len(self.depths) != len(self.widths) or not self.depths:
            raise ValueError(f"ResNet: depths {tuple(self.depths)} and widths {tuple(self.widths)} must be non-empty "
                             "and give one entry per stage")
        x = Conv(self.widths[0], (7, 7), strides=2, padding=3, use_bias=self.norm == "none",
                    kernel_init=conv_kernel_init, dtype=self.dtype, name="stem")(x.astype(self.dtype))
        x = make_norm(self.norm, features=self.widths[0], train=train and not self.freeze_bn,
                      axis_name=self.norm_axis_name, dtype=self.dtype)(x)
        x = nn.relu(x)
        outputs = {"C1": x}
        x = max_pool_2x2(x)
        block = functools.partial(BasicBlock, norm=self.norm, freeze_bn=self.freeze_bn,
                                  norm_axis_name=self.norm_axis_name, dtype=self.dtype)
        for stage, (depth, width) in enumerate(zip(self.depths, self.widths)):
            for index in range(depth):
                strides = 2 if stage > 0 and index == 0 else 1
                x = block(width, strides=strides, name=f"stage{stage}_block{index}")(x, train=train)
            outputs[f"C{stage + 2}"] = x
        return outputs
