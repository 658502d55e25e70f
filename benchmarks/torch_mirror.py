"""PyTorch eager mirrors of seg_jax's U-Net and FCN, for `benchmarks.torch_reference` (benchmark-only: torch).

Each mirror has the same layers, kernel sizes, paddings, up-convolutions, heads and parameter count as the seg_jax
model built from the same `config.model` options (seg_jax/models/unet.py, fcn.py, layers.py); initial values and
the spatial orientation of transposed-conv kernels are not mirrored, as only the cost of a step is compared.
Inputs and outputs are NCHW tensors; `make_mirror` returns the module in channels_last memory format, the
layout PyTorch's CPU convolutions are fastest in and the one seg_jax's NHWC arrays have.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from seg_jax.models.backbones.vgg import FC_WIDTH, VGG16_BLOCKS
from seg_jax.models.fcn import SKIP_POOLS
from seg_jax.models.layers import GROUP_NORM_GROUPS, BATCH_NORM_MOMENTUM, bilinear_kernel_size

MIRRORED_NORMS = ("none", "batch", "group")  # flax's LayerNorm over channels has no one-module torch twin


def _norm(norm: str, channels: int) -> nn.Module:
    if norm == "none":
        return nn.Identity()
    if norm == "batch":
        # torch's momentum weighs the new statistics, flax's the old ones; eps is 1e-5 in both.
        return nn.BatchNorm2d(channels, momentum=1.0 - BATCH_NORM_MOMENTUM)
    if norm == "group":
        return nn.GroupNorm(math.gcd(GROUP_NORM_GROUPS, channels), channels)
    raise ValueError(f"norm={norm!r} has no mirror; mirrored: {', '.join(MIRRORED_NORMS)}")


def conv_block(in_channels: int, features: int, *, num_convs: int = 2, kernel_size: int = 3,
               norm: str = "none") -> nn.Sequential:
    """`layers.ConvBlock`: num_convs × (k×k 'same' conv, bias only without norm → norm → ReLU)."""
    layers = []
    for index in range(num_convs):
        layers += [nn.Conv2d(in_channels if index == 0 else features, features, kernel_size,
                             padding=kernel_size // 2, bias=norm == "none"),
                   _norm(norm, features), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """`layers.pad_to_multiple` for NCHW: zeros at the bottom and right."""
    height, width = x.shape[-2:]
    return F.pad(x, (0, -width % multiple, 0, -height % multiple))


class BilinearUpsample(nn.ConvTranspose2d):
    """`layers.BilinearUpsample`: ×f transposed conv, kernel 2f - f mod 2, no bias, C → C channels.

    seg_jax pads the stride-dilated input by K - 1 - f // 2 (lax.conv_transpose); torch's `padding` p removes
    p from each side of the full output, which is the same as padding the dilated input by K - 1 - p, so
    p = f // 2, and the output is exactly f·H × f·W.
    """

    def __init__(self, channels: int, factor: int):
        super().__init__(channels, channels, bilinear_kernel_size(factor), stride=factor, padding=factor // 2,
                         bias=False)


class UNet(nn.Module):
    """`unet.UNet`: [B, 3, H, W] → logits [B, N, H, W]."""

    def __init__(self, num_classes: int, *, depth: int = 4, base_width: int = 64, upsample: str = "transpose",
                 norm: str = "none"):
        super().__init__()
        self.depth, self.upsample = depth, upsample
        widths = [base_width * 2 ** level for level in range(depth + 1)]
        ins = [3] + widths[:-1]
        self.down = nn.ModuleList(conv_block(ins[level], widths[level], norm=norm) for level in range(depth))
        self.bottleneck = conv_block(ins[depth], widths[depth], norm=norm)
        # `UpConv2x2` (2×2 stride-2, bias) or, for "bilinear", the 1×1 conv after the fixed resize.
        up_kernel = {"transpose": 2, "bilinear": 1}[upsample]
        up_cls = nn.ConvTranspose2d if upsample == "transpose" else nn.Conv2d
        self.up = nn.ModuleList(up_cls(widths[level + 1], widths[level], up_kernel, stride=up_kernel)
                                for level in range(depth))
        self.dec = nn.ModuleList(conv_block(2 * widths[level], widths[level], norm=norm) for level in range(depth))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = _pad_to_multiple(x, 2 ** self.depth)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for level in reversed(range(self.depth)):
            if self.upsample == "bilinear":
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = self.dec[level](torch.cat([skips[level], self.up[level](x)], dim=1))
        return self.head(x)[..., :height, :width]


class FCN(nn.Module):
    """`fcn.FCN`: VGG-16-style backbone, fc6/fc7 as convs, score_fr, skip scores and bilinear upsampling."""

    def __init__(self, num_classes: int, *, output_stride: int = 32, width_multiplier: float = 1.0,
                 fc6_kernel: int = 3, dropout_rate: float = 0.0, norm: str = "none", fc_norm: bool = True,
                 freeze_bn: bool = False):
        super().__init__()
        if freeze_bn:
            raise ValueError("the FCN mirror has no freeze_bn")
        self.output_stride = output_stride
        width = lambda channels: max(1, round(channels * width_multiplier))
        blocks, in_channels = [], 3
        for channels, num_convs in VGG16_BLOCKS:
            blocks.append(conv_block(in_channels, width(channels), num_convs=num_convs, norm=norm))
            in_channels = width(channels)
        self.blocks = nn.ModuleList(blocks)
        fc = width(FC_WIDTH)
        fc_norm = norm if fc_norm else "none"
        self.fc = nn.Sequential(conv_block(in_channels, fc, num_convs=1, kernel_size=fc6_kernel, norm=fc_norm),
                                nn.Dropout(dropout_rate), conv_block(fc, fc, num_convs=1, kernel_size=1, norm=fc_norm),
                                nn.Dropout(dropout_rate))
        self.score_fr = nn.Conv2d(fc, num_classes, 1)
        fused = [s for s in (16, 8) if s >= output_stride]
        self.score_pool = nn.ModuleDict({str(SKIP_POOLS[s]): nn.Conv2d(width(VGG16_BLOCKS[SKIP_POOLS[s] - 1][0]),
                                                                       num_classes, 1) for s in fused})
        self.upscore = nn.ModuleList(BilinearUpsample(num_classes, 2) for _ in fused)
        self.final = BilinearUpsample(num_classes, output_stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = _pad_to_multiple(x, 32)
        pools = {}
        for index, block in enumerate(self.blocks, start=1):
            x = F.max_pool2d(block(x), 2)
            pools[index] = x
        scores = self.score_fr(self.fc(x))
        for upscore, pool in zip(self.upscore, self.score_pool):
            scores = upscore(scores) + self.score_pool[pool](pools[int(pool)])
        return self.final(scores)[..., :height, :width]


MIRRORS = {"unet": UNet, "fcn32s": FCN, "fcn16s": FCN, "fcn8s": FCN}
_FIXED = {"fcn32s": {"output_stride": 32}, "fcn16s": {"output_stride": 16}, "fcn8s": {"output_stride": 8}}
_NOT_MIRRORED = ("dtype", "norm_axis_name", "conv_impl")  # options that change how, not what, seg_jax computes


def make_mirror(name: str, *, num_classes: int, **options) -> nn.Module:
    """The mirror of `seg_jax.models.create_model(name, num_classes=..., **options)`, channels_last."""
    if name not in MIRRORS:
        raise ValueError(f"model {name!r} has no torch mirror; mirrored: {', '.join(MIRRORS)}")
    kwargs = {k: v for k, v in options.items() if k not in _NOT_MIRRORED}
    return MIRRORS[name](num_classes, **_FIXED.get(name, {}), **kwargs).to(memory_format=torch.channels_last)


def param_count(module: nn.Module) -> int:
    """Trainable parameters (BatchNorm's running statistics are buffers, as seg_jax's `batch_stats`)."""
    return sum(p.numel() for p in module.parameters())
