"""VGG-16 (Simonyan & Zisserman 2015) with fc6/fc7 as convolutions, FCN's backbone (Long et al. 2015).

Five blocks of (2, 2, 3, 3, 3) 3×3 convs with 64, 128, 256, 512, 512 channels, each conv followed by the
norm and ReLU and each block by a 2×2 max-pool (pool1..pool5, strides 2..32). With `fully_convolutional`,
fc6 (a k×k conv, 4096 channels) and fc7 (1×1, 4096) follow, each with ReLU and dropout, as FCN
"convolutionalises" VGG's classifier: with k = 7 they take torchvision's `classifier.0` / `classifier.3`
weights, and on a 224×224 input the centre pixel of fc7 is VGG-16's fc7 activation.

Flax names are the Caffe model's: conv{b}_{i} (and bn{b}_{i}, the conv's normalisation layer of any kind),
fc6, fc7; torchvision's `features.{n}` indices are derived from them in `torch_layout`.
"""
from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from seg_jax.models.backbones import layout
from seg_jax.models.layers import Conv, conv_kernel_init, make_norm, max_pool_2x2

VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))  # (channels, 3×3 convs) per block
FC_WIDTH = 4096


class VGG16(nn.Module):
    """float [B, H, W, 3] (H, W multiples of 32) → {"C1": pool1, ..., "C5": pool5[, "fc7": fc7]}.

    C_k is float [B, H / 2**k, W / 2**k, width(channels of block k)]; fc7 is [B, H/32, W/32, width(4096)]
    (present with `fully_convolutional`); all in `dtype`.

    Attributes:
        width_multiplier: scales every channel count (1.0 = torchvision's VGG-16).
        norm: after every conv of the five blocks: "none" (VGG-16) or "batch" (torchvision's vgg16_bn);
            "group" and "layer" train but have no torchvision weights.
        fully_convolutional: add fc6 / fc7.
        fc6_kernel: fc6's kernel size in pixels (7 in VGG and the FCN paper; pretrained weights need 7).
        fc_norm: normalise fc6 / fc7 too (`norm`); torchvision's classifier has no normalisation, so its weights
            need False.
        dropout_rate: dropout after fc6 and fc7 when training (VGG's 0.5); needs a "dropout" rng.
        freeze_bn: BatchNorm always uses (and never updates) its running statistics, as detectron2's
            FrozenBN; the trainer also keeps its scale and bias fixed (`frozen_prefixes`).
        norm_axis_name: BatchNorm's cross-device axis name, or None.
        dtype: compute dtype; parameters stay float32.
    """
    width_multiplier: float = 1.0
    norm: str = "none"
    fully_convolutional: bool = True
    fc6_kernel: int = 7
    fc_norm: bool = False
    dropout_rate: float = 0.0
    freeze_bn: bool = False
    norm_axis_name: str | None = None
    dtype: Any = jnp.float32

    num_stages: ClassVar[int] = 5  # freeze_stages = k freezes conv1_* .. conv{k}_*; fc6/fc7 count as stage 6

    def _width(self, channels: int) -> int:
        return max(1, round(channels * self.width_multiplier))

    def _conv_norm_relu(self, x: jax.Array, features: int, kernel: int, *, name: str, norm_name: str,
                        normalise: bool, train: bool) -> jax.Array:
        # A bias only without a norm (which brings its own shift): vgg16_bn's conv biases are folded into the
        # BatchNorm's running mean when loaded (exact: in training the batch mean cancels them anyway).
        x = Conv(features, (kernel, kernel), padding="SAME", use_bias=not normalise or self.norm == "none",
                    kernel_init=conv_kernel_init, dtype=self.dtype, name=name)(x)
        if normalise:
            x = make_norm(self.norm, features=features, train=train and not self.freeze_bn,
                          axis_name=self.norm_axis_name, dtype=self.dtype, name=norm_name)(x)
        return nn.relu(x)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> dict[str, jax.Array]:
        x = x.astype(self.dtype)
        features = {}
        for block, (channels, num_convs) in enumerate(VGG16_BLOCKS, start=1):
            for index in range(1, num_convs + 1):
                x = self._conv_norm_relu(x, self._width(channels), 3, name=f"conv{block}_{index}",
                                         norm_name=f"bn{block}_{index}", normalise=True, train=train)
            x = max_pool_2x2(x)
            features[f"C{block}"] = x
        if self.fully_convolutional:
            for name, kernel in (("fc6", self.fc6_kernel), ("fc7", 1)):
                x = self._conv_norm_relu(x, self._width(FC_WIDTH), kernel, name=name, norm_name=f"bn_{name}",
                                         normalise=self.fc_norm, train=train)
                x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
            features["fc7"] = x
        return features

    # ------------------------------------------------------------------------------ pretrained weights
    # timm's VGG keeps fc6 / fc7 as convs under other names; read as torchvision's.
    key_renames: ClassVar[dict[str, str]] = {"pre_logits.fc1.": "classifier.0.", "pre_logits.fc2.": "classifier.3.",
                                             "head.fc.": "classifier.6."}

    def skipped(self, key: str) -> bool:
        """Keys of the state dict this backbone does not use: the 1000-class fc8 (and fc6/fc7 without them)."""
        return key.startswith("classifier." if not self.fully_convolutional else "classifier.6.")

    def torch_layout(self) -> list[layout.TorchEntry]:
        """torchvision's `vgg16` (norm "none") or `vgg16_bn` (norm "batch") keys of these variables."""
        if self.norm not in ("none", "batch") or (self.fc_norm and self.norm != "none"):
            raise ValueError(f"backbone 'vgg16' with norm={self.norm!r}, fc_norm={self.fc_norm} has no torchvision "
                             "weights; torchvision has norm='none' (vgg16) and norm='batch' (vgg16_bn), fc_norm=False")
        entries, index = [], 0
        for block, (_, num_convs) in enumerate(VGG16_BLOCKS, start=1):
            for conv in range(1, num_convs + 1):
                batch_norm = self.norm == "batch"
                entries += layout.conv(f"features.{index}", (f"conv{block}_{conv}",), bias=not batch_norm)
                if batch_norm:
                    entries += layout.batch_norm(f"features.{index + 1}", (f"bn{block}_{conv}",))
                    entries.append(layout.TorchEntry(f"features.{index}.bias", ("batch_stats", f"bn{block}_{conv}",
                                                                                  "mean"), "subtract"))
                    index += 1
                index += 1
                index += 1  # ReLU
            index += 1  # MaxPool2d
        if self.fully_convolutional:
            for key, name in (("classifier.0", "fc6"), ("classifier.3", "fc7")):
                entries += [layout.TorchEntry(f"{key}.weight", ("params", name, "kernel"), "fc_conv"),
                            layout.TorchEntry(f"{key}.bias", ("params", name, "bias"), "vector")]
        return entries

    # ------------------------------------------------------------------------------ freezing
    @staticmethod
    def stage_of(module: str) -> int:
        """The stage of a top-level module: conv{b}_{i} / bn{b}_{i} → b; fc6, fc7 and their norms → 6."""
        return 6 if "fc" in module else int(module[len("conv" if module.startswith("conv") else "bn")])

    def is_batch_norm(self, module_path: tuple[str, ...]) -> bool:
        return self.norm == "batch" and module_path[-1].startswith("bn")
