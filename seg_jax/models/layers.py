"""Building blocks shared by the segmentation models.

- `Conv` / `Dense`: flax's layers with the bias added in float32 (its gradient is summed in float32) under
  mixed precision; the same as flax's in float32.
- `ConvBlock`: `num_convs` × (3×3 conv → normalisation → ReLU), the unit of both VGG and U-Net.
- `make_norm`: the normalisation layer named by a model's `norm` option.
- `bilinear_kernel` / `BilinearUpsample`: a learnable transposed convolution initialised to bilinear
  interpolation (Long et al., FCN, section 3.3).
- `max_pool_2x2`: 2×2 / stride-2 max-pool with a backward pass that is fast on CPU.
- `pad_to_multiple`: zero-pad images so every pooling step divides evenly; models crop back afterwards.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

NORMS = ("none", "batch", "group", "layer")
GROUP_NORM_GROUPS = 32  # Wu & He's default; fewer when the channel count does not divide by it
BATCH_NORM_MOMENTUM = 0.9  # running stats must settle within tens of steps in short CPU runs

# ReLU networks: He et al. init, which both the U-Net paper and VGG's successors use.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def promote_keeping_bias(inputs: jax.Array, kernel: jax.Array, bias: jax.Array | None, *, dtype: Any = None,
                         inexact: bool = True) -> list:
    """flax's `promote_dtype` for the input and kernel of a layer, its bias left as it is (float32). flax then adds
    it as `y += bias`, so the sum is float32 and the bias gradient, a sum over every pixel of the batch, accumulates
    in float32: in bfloat16 that sum was off by 7 % over a 8×64×64 batch (the U-Net head's bias gradient at
    initialisation pointed 45° from float32's)."""
    inputs, kernel = nn.dtypes.promote_dtype(inputs, kernel, dtype=dtype, inexact=inexact)
    return [inputs, kernel, bias]


class Conv(nn.Conv):
    """`nn.Conv` whose bias is added in float32 (`promote_keeping_bias`), output cast back to `dtype`."""
    promote_dtype: Callable[..., list] = promote_keeping_bias

    def __call__(self, inputs: jax.Array) -> jax.Array:
        y = super().__call__(inputs)
        return y if self.dtype is None else y.astype(self.dtype)


class Dense(nn.Dense):
    """`nn.Dense` whose bias is added in float32 (`promote_keeping_bias`), output cast back to `dtype`."""
    promote_dtype: Callable[..., list] = promote_keeping_bias

    def __call__(self, inputs: jax.Array) -> jax.Array:
        y = super().__call__(inputs)
        return y if self.dtype is None else y.astype(self.dtype)


def make_norm(norm: str, *, features: int, train: bool, axis_name: str | None,
              dtype: Any, name: str | None = None) -> Callable[[jax.Array], jax.Array]:
    """Returns the normalisation layer named by `norm`; call it inside an `nn.compact` method.

    Args:
        norm: one of `NORMS`. "batch" normalises over [B, H, W] (batch statistics when `train`, else running
            averages, kept in the `batch_stats` collection); "group" over [H, W, C/G] with
            G = gcd(32, features) groups; "layer" over the channels of each pixel; "none" is the identity.
        features: channel count C of the input [B, H, W, C].
        train: use (and update) batch statistics instead of running averages (BatchNorm only).
        axis_name: pmap/shard_map axis over which BatchNorm averages batch statistics, or None.
        dtype: compute dtype; parameters and statistics stay float32.
        name: the layer's module name (None: Flax's automatic one, e.g. "BatchNorm_0").
    """
    if norm == "none":
        return lambda x: x
    if norm == "batch":
        return nn.BatchNorm(use_running_average=not train, momentum=BATCH_NORM_MOMENTUM,
                            axis_name=axis_name, dtype=dtype, name=name)
    if norm == "group":
        return nn.GroupNorm(num_groups=math.gcd(GROUP_NORM_GROUPS, features), dtype=dtype, name=name)
    if norm == "layer":
        return nn.LayerNorm(dtype=dtype, name=name)
    raise ValueError(f"model option norm={norm!r} is not valid; valid values: {', '.join(NORMS)}")


class ConvBlock(nn.Module):
    """`num_convs` × (k×k 'same' conv → norm → ReLU): [B, H, W, C_in] → [B, H, W, features].

    The conv has a bias only when `norm == "none"` (a normalisation layer brings its own shift).
    """
    features: int
    num_convs: int = 2
    kernel_size: int = 3
    norm: str = "none"
    norm_axis_name: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        for _ in range(self.num_convs):
            x = Conv(self.features, (self.kernel_size, self.kernel_size), padding="SAME",
                        use_bias=self.norm == "none", kernel_init=conv_kernel_init, dtype=self.dtype)(x)
            x = make_norm(self.norm, features=self.features, train=train,
                          axis_name=self.norm_axis_name, dtype=self.dtype)(x)
            x = nn.relu(x)
        return x


def bilinear_kernel_size(factor: int) -> int:
    """Kernel width (pixels) of ×`factor` bilinear upsampling: 2f - f mod 2, as in FCN's Caffe models."""
    return 2 * factor - factor % 2


def bilinear_kernel(factor: int, channels: int) -> np.ndarray:
    """Transposed-conv kernel float32 [K, K, C, C] that upsamples each channel bilinearly by `factor`.

    K = `bilinear_kernel_size(factor)`; the 1-D taps are w[k] = 1 - |k - (K - 1) / 2| / factor, the 2-D
    kernel is their outer product, and channels do not mix (zero off the channel diagonal).
    """
    size = bilinear_kernel_size(factor)
    taps = 1.0 - np.abs(np.arange(size) - (size - 1) / 2) / factor
    return (np.outer(taps, taps)[:, :, None, None] * np.eye(channels)).astype(np.float32)


def _bilinear_init(factor: int) -> Callable[..., jax.Array]:
    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        del key  # deterministic
        if shape[2] != shape[3]:
            raise ValueError(f"bilinear upsampling keeps the channel count, got kernel shape {shape}")
        return jnp.asarray(bilinear_kernel(factor, shape[2]), dtype)
    return init


class BilinearUpsample(nn.Module):
    """Learnable ×`factor` upsampling [B, H, W, C] → [B, f·H, f·W, C]: a transposed conv, no bias.

    Kernel [K, K, C, C] (`bilinear_kernel_size`), stride f. At initialisation each output pixel o is the
    bilinear interpolation of the input at coordinate (o + 0.5) / f - 0.5 (half-pixel centres, as
    `jax.image.resize(..., "bilinear")`), exactly for every o whose two neighbours lie inside the image;
    the outermost ~f/2 pixels see zero padding instead of clamping. Caffe's deconvolution with
    padding f // 2 is this layer with the kernel flipped spatially (the bilinear kernel is symmetric).
    """
    factor: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        size = bilinear_kernel_size(self.factor)
        # Padding of the stride-dilated input that gives exactly f·H outputs, aligned as documented.
        pad = size - 1 - self.factor // 2
        return nn.ConvTranspose(x.shape[-1], (size, size), strides=(self.factor, self.factor),
                                padding=((pad, pad), (pad, pad)), use_bias=False,
                                kernel_init=_bilinear_init(self.factor), dtype=self.dtype)(x)


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2×2 max-pool with stride 2: [B, H, W, C] → [B, H/2, W/2, C]; H and W must be even.

    Same values as `nn.max_pool(x, (2, 2), strides=(2, 2))`, but written as a reshape + max so the
    gradient avoids XLA:CPU's select-and-scatter, which made the whole backward pass several times slower.
    On ties the gradient is split evenly between the maxima instead of going to the first one.
    """
    batch, height, width, channels = x.shape
    return x.reshape(batch, height // 2, 2, width // 2, 2, channels).max(axis=(2, 4))


def pad_to_multiple(x: jax.Array, multiple: int) -> jax.Array:
    """Zero-pads [B, H, W, C] at the bottom and right so H and W become multiples of `multiple`.

    Models pad their input this way and crop their logits back to [:, :H, :W], so any H, W works; the
    top-left alignment of the kept pixels is unchanged.
    """
    _, height, width, _ = x.shape
    # ceil(side / multiple) * multiple - side, not -side % multiple: the same for integers, and for a symbolic side
    # (`jax.export` with any H, W) the padded side is then `multiple * k`, which shape checks downstream can halve
    pad_h, pad_w = (-(-side // multiple) * multiple - side for side in (height, width))
    return jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
