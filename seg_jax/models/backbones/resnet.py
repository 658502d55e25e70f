"""torchvision's ResNet-50 / ResNet-101 (He et al. 2016; bottleneck blocks, "v1.5": the stride in the 3×3 conv).

Stem: 7×7 stride-2 conv → BatchNorm → ReLU (C1, stride 2) → 3×3 stride-2 max-pool (padding 1). Stages
layer1..layer4 have `depths` bottleneck blocks (1×1 → 3×3 → 1×1 conv, each with a norm, expansion 4) of
64, 128, 256, 512 inner channels; layers 2..4 start with a stride-2 block; they give C2..C5 (strides 4..32).
Flax module names are torchvision's with "." → "_" (conv1, bn1, layer1_0/conv1, layer1_0/downsample_conv, ...),
so `torch_layout` is a renaming.
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from seg_jax.models.backbones import layout
from seg_jax.models.layers import conv_kernel_init, make_norm

STAGE_WIDTHS = (64, 128, 256, 512)  # inner channels of each stage's bottlenecks
EXPANSION = 4
DEPTHS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}


class Bottleneck(nn.Module):
    """[B, H, W, C] → [B, H/s, W/s, EXPANSION·width]: relu(x' + bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x))))))))),
    s = `strides`; x' is x, or downsample_bn(downsample_conv(x)) (1×1, stride s) when the shape changes."""
    width: int
    strides: int = 1
    norm: str = "batch"
    train_norm: bool = False  # BatchNorm uses batch statistics (train and not freeze_bn)
    norm_axis_name: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(nn.Conv, use_bias=False, kernel_init=conv_kernel_init, dtype=self.dtype)
        norm = functools.partial(make_norm, self.norm, train=self.train_norm, axis_name=self.norm_axis_name,
                                 dtype=self.dtype)
        out = EXPANSION * self.width
        y = nn.relu(norm(features=self.width, name="bn1")(conv(self.width, (1, 1), name="conv1")(x)))
        # Symmetric padding 1 (torchvision's), not "SAME", whose stride-2 padding is lopsided on even inputs.
        y = conv(self.width, (3, 3), strides=self.strides, padding=1, name="conv2")(y)
        y = nn.relu(norm(features=self.width, name="bn2")(y))
        y = norm(features=out, name="bn3")(conv(out, (1, 1), name="conv3")(y))
        if self.strides != 1 or x.shape[-1] != out:
            x = norm(features=out, name="downsample_bn")(
                conv(out, (1, 1), strides=self.strides, name="downsample_conv")(x))
        return nn.relu(x + y)


class BottleneckResNet(nn.Module):
    """float [B, H, W, 3] (H, W multiples of 32) → {"C1": [B, H/2, W/2, w(64)], "C{k+1}": layer k
    [B, H / 2**(k+1), W / 2**(k+1), 4·w(STAGE_WIDTHS[k-1])] for k = 1..4}, in `dtype`; w scales by
    `width_multiplier`.

    Attributes:
        depths: bottleneck blocks per stage ((3, 4, 6, 3) = ResNet-50, (3, 4, 23, 3) = ResNet-101).
        width_multiplier: scales every channel count (1.0 = torchvision's).
        norm: "batch" (torchvision's), or "group" / "layer" / "none" (no torchvision weights).
        freeze_bn: BatchNorm uses (and never updates) its running statistics, as detectron2's FrozenBN; the
            trainer also keeps its scale and bias fixed (`frozen_prefixes`).
        norm_axis_name: BatchNorm's cross-device axis name, or None.
        dtype: compute dtype; parameters stay float32.
    """
    depths: Sequence[int] = DEPTHS["resnet50"]
    width_multiplier: float = 1.0
    norm: str = "batch"
    freeze_bn: bool = False
    norm_axis_name: str | None = None
    dtype: Any = jnp.float32

    num_stages: ClassVar[int] = 5  # the stem, then layer1..layer4

    def _width(self, channels: int) -> int:
        return max(1, round(channels * self.width_multiplier))

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> dict[str, jax.Array]:
        if len(self.depths) != len(STAGE_WIDTHS):
            raise ValueError(f"BottleneckResNet: depths {tuple(self.depths)} needs {len(STAGE_WIDTHS)} entries")
        train_norm = train and not self.freeze_bn
        stem = self._width(64)
        x = nn.Conv(stem, (7, 7), strides=2, padding=3, use_bias=False, kernel_init=conv_kernel_init,
                    dtype=self.dtype, name="conv1")(x.astype(self.dtype))
        x = nn.relu(make_norm(self.norm, features=stem, train=train_norm, axis_name=self.norm_axis_name,
                              dtype=self.dtype, name="bn1")(x))
        features = {"C1": x}
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # pads with -inf, as torch
        for stage, (depth, width) in enumerate(zip(self.depths, STAGE_WIDTHS), start=1):
            for index in range(depth):
                x = Bottleneck(self._width(width), strides=2 if stage > 1 and index == 0 else 1, norm=self.norm,
                               train_norm=train_norm, norm_axis_name=self.norm_axis_name, dtype=self.dtype,
                               name=f"layer{stage}_{index}")(x)
            features[f"C{stage + 1}"] = x
        return features

    # ------------------------------------------------------------------------------ pretrained weights
    key_renames: ClassVar[dict[str, str]] = {}  # timm's ResNets use torchvision's names

    @staticmethod
    def skipped(key: str) -> bool:
        """The 1000-class classifier, unused by a backbone."""
        return key.startswith("fc.")

    def torch_layout(self) -> list[layout.TorchEntry]:
        if self.norm != "batch":
            raise ValueError(f"backbone ResNet with norm={self.norm!r} has no torchvision weights (they have "
                             "norm='batch')")
        entries = layout.conv("conv1", ("conv1",), bias=False) + layout.batch_norm("bn1", ("bn1",))
        for stage, depth in enumerate(self.depths, start=1):
            for index in range(depth):
                block, module = f"layer{stage}.{index}", f"layer{stage}_{index}"
                for i in (1, 2, 3):
                    entries += layout.conv(f"{block}.conv{i}", (module, f"conv{i}"), bias=False)
                    entries += layout.batch_norm(f"{block}.bn{i}", (module, f"bn{i}"))
                if index == 0:  # every stage's first block changes the channel count
                    entries += layout.conv(f"{block}.downsample.0", (module, "downsample_conv"), bias=False)
                    entries += layout.batch_norm(f"{block}.downsample.1", (module, "downsample_bn"))
        return entries

    # ------------------------------------------------------------------------------ freezing
    @staticmethod
    def stage_of(module: str) -> int:
        """The stage of a top-level module: conv1 / bn1 → 1, layer{k}_{i} → k + 1."""
        return int(module[len("layer"):].split("_")[0]) + 1 if module.startswith("layer") else 1

    def is_batch_norm(self, module_path: tuple[str, ...]) -> bool:
        return self.norm == "batch" and "bn" in module_path[-1]
