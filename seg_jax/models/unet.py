"""U-Net (Ronneberger, Fischer & Brox, MICCAI 2015) with 'same' padding and optional normalisation.

Level l (0..depth) works at stride 2**l with C_l = base_width · 2**l channels. Encoder: at each level
l < depth two 3×3 conv-norm-ReLU layers (kept as the skip), then a 2×2 max-pool; the bottleneck
(level `depth`) has two more. Decoder, for l = depth-1 .. 0: upsample ×2 to C_l channels, concatenate
[skip_l, upsampled], two 3×3 conv-norm-ReLU layers. A 1×1 conv gives the class logits.

Parameter count with norm="none" (3 input channels, N classes, kernel + bias per conv):
    encoder    (27 + 1)·C_0 + (9·C_0 + 1)·C_0  +  Σ_{l=1..depth} (9·C_{l-1} + 1)·C_l + (9·C_l + 1)·C_l
    decoder    Σ_{l=0..depth-1} (u·C_{l+1} + 1)·C_l + (18·C_l + 1)·C_l + (9·C_l + 1)·C_l
    head       (C_0 + 1)·N
with u = 4 for upsample="transpose" (2×2 up-convolution) and u = 1 for "bilinear" (resize + 1×1 conv).
Normalised variants drop the 3×3 conv biases and add 2·C (scale, shift) per normalisation layer.
Inputs are zero-padded to a multiple of 2**depth at the bottom/right and the logits cropped back.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seg_jax.models.factory import MODELS
from seg_jax.models.layers import Conv, ConvBlock, max_pool_2x2, pad_to_multiple

UPSAMPLINGS = ("transpose", "bilinear")


class UpConv2x2(nn.Module):
    """The paper's 2×2 stride-2 "up-convolution": [B, H, W, C] → [B, 2H, 2W, features].

    out[2i + a, 2j + b] = x[i, j] · kernel[a, b] + bias, with kernel [2, 2, C, features]. This is a
    transposed convolution (the same as `nn.ConvTranspose(features, (2, 2), strides=(2, 2))` with the
    kernel flipped spatially); as the 2×2 windows do not overlap it is written as one matmul and a
    depth-to-space reshape, whose backward pass is several times faster on CPU than a strided
    conv_transpose's.
    """
    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (2, 2, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
        batch, height, width, _ = x.shape
        y = jnp.einsum("bhwc,xycf->bhxwyf", x, kernel)  # [B, H, 2, W, 2, F]
        # the bias added in float32, so its gradient is summed in float32 (`layers.promote_keeping_bias`)
        return (y.reshape(batch, 2 * height, 2 * width, self.features) + bias).astype(x.dtype)


@MODELS.register("unet")
class UNet(nn.Module):
    """U-Net: float32 [B, H, W, 3] → logits float32 [B, H, W, num_classes].

    Attributes:
        num_classes: N.
        depth: number of 2× down-sampling steps (4 in the paper).
        base_width: channels at full resolution, doubled per level (64 in the paper).
        upsample: "transpose" (the paper's learnable 2×2 up-convolution) or "bilinear" (fixed bilinear
            ×2 resize, then a 1×1 conv that halves the channels).
        norm: "none" (the paper), "batch", "group" or "layer", after every 3×3 conv.
        norm_axis_name: BatchNorm's cross-device axis name (e.g. "batch" inside `jax.pmap`), or None.
        dtype: compute dtype (e.g. jnp.bfloat16); parameters stay float32, logits are float32.
    """
    num_classes: int
    depth: int = 4
    base_width: int = 64
    upsample: str = "transpose"
    norm: str = "none"
    norm_axis_name: str | None = None
    dtype: Any = jnp.float32

    def _up(self, x: jax.Array, features: int, *, dtype: Any, name: str) -> jax.Array:
        if self.upsample == "transpose":
            return UpConv2x2(features, dtype=dtype, name=name)(x)
        if self.upsample == "bilinear":
            batch, height, width, channels = x.shape
            x = jax.image.resize(x, (batch, 2 * height, 2 * width, channels), "bilinear")
            return Conv(features, (1, 1), dtype=dtype, name=name)(x)
        raise ValueError(f"UNet upsample={self.upsample!r} is not valid; "
                         f"valid values: {', '.join(UPSAMPLINGS)}")

    @property
    def input_multiple(self) -> int:
        """Pixels its input sides are zero-padded to (one per pooling step); tiles of a multiple of it see what the
        whole image shows there (`seg_jax.predict`)."""
        return 2 ** int(self.depth)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        if self.depth < 0:
            raise ValueError(f"UNet depth={self.depth} must be >= 0")
        dtype = jnp.dtype(self.dtype)
        height, width = x.shape[1:3]
        x = pad_to_multiple(x.astype(dtype), self.input_multiple)
        block = functools.partial(ConvBlock, num_convs=2, norm=self.norm,
                                  norm_axis_name=self.norm_axis_name, dtype=dtype)
        widths = [self.base_width * 2 ** level for level in range(self.depth + 1)]

        skips = []
        for level in range(self.depth):
            x = block(widths[level], name=f"down{level}")(x, train=train)
            skips.append(x)
            x = max_pool_2x2(x)
        x = block(widths[self.depth], name="bottleneck")(x, train=train)
        for level in reversed(range(self.depth)):
            x = self._up(x, widths[level], dtype=dtype, name=f"up{level}")
            x = jnp.concatenate([skips[level], x], axis=-1)
            x = block(widths[level], name=f"dec{level}")(x, train=train)

        logits = Conv(self.num_classes, (1, 1), dtype=dtype, name="head")(x)
        return logits[:, :height, :width].astype(jnp.float32)
