"""FCN-32s, FCN-16s and FCN-8s (Long, Shelhamer & Darrell, CVPR 2015) on VGG-16 (`seg_jax.models.backbones.vgg`).

Backbone: VGG-16's five conv blocks (pool1..pool5, strides 2..32), then fc6 (k×k conv, 4096 channels; k = 7 in the
paper) and fc7 (1×1 conv, 4096 channels): the paper's convolutionalised classifier, so with k = 7 torchvision's
VGG-16 weights (`model.pretrained`) load as they are; `width_multiplier` scales every channel count.

Head: score_fr, a 1×1 conv to N class scores at stride 32. FCN-16s upsamples them ×2 ("upscore2") and
adds score_pool4 (1×1 conv on pool4); FCN-8s upsamples that sum ×2 ("upscore_pool4") and adds
score_pool3. The finest sum is upsampled ×32/×16/×8 to the input resolution. Every upsampling is a
learnable transposed conv initialised to bilinear interpolation; the skip score layers are initialised
to zero, so an untrained FCN-8s first predicts what its FCN-32s path predicts (the paper's staged
training). Instead of the paper's 100-pixel input padding and crop layers, inputs are zero-padded to a
multiple of 32 at the bottom/right and the logits cropped back, so all score maps align exactly.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seg_jax.models.backbones import create_backbone
from seg_jax.models.factory import MODELS
from seg_jax.models.layers import BilinearUpsample, Conv, pad_to_multiple

OUTPUT_STRIDES = (32, 16, 8)
SKIP_POOLS = {16: 4, 8: 3}  # fused score map stride → the pool block whose scores are added there


class FCN(nn.Module):
    """Fully convolutional network: float32 [B, H, W, 3] → logits float32 [B, H, W, num_classes].

    Attributes:
        num_classes: N.
        output_stride: stride of the finest fused score map: 32 (FCN-32s), 16 (FCN-16s) or 8 (FCN-8s).
        width_multiplier: scales all backbone channel counts (1.0 = 64..512 convs, 4096 fc).
        fc6_kernel: fc6 kernel size in pixels (7 in the paper and for pretrained VGG-16; small for small images).
        dropout_rate: dropout after fc6 and fc7 when training (0.5 in the paper); > 0 needs
            `rngs={"dropout": key}` in `apply(..., train=True)`.
        norm: "none" (the paper), "batch" (torchvision's vgg16_bn), "group" or "layer", after every conv of the
            five blocks.
        fc_norm: also normalise fc6 and fc7 with `norm` (as this FCN always has; torchvision's VGG-16 has no norm
            there, so loading vgg16_bn weights needs False).
        freeze_bn: the backbone's BatchNorm uses its running statistics, never updated (detectron2's FrozenBN).
        norm_axis_name: BatchNorm's cross-device axis name (e.g. "batch" inside `jax.pmap`), or None.
        dtype: compute dtype (e.g. jnp.bfloat16); parameters stay float32, logits are float32.
    """
    num_classes: int
    output_stride: int = 32
    width_multiplier: float = 1.0
    fc6_kernel: int = 3
    dropout_rate: float = 0.0
    norm: str = "none"
    fc_norm: bool = True
    freeze_bn: bool = False
    norm_axis_name: str | None = None
    dtype: Any = jnp.float32

    def backbone_config(self) -> tuple[str, dict[str, Any]]:
        """(name, options) of the backbone: `create_backbone(name, **options)`, `load_pretrained(path, name, ...)`."""
        return "vgg16", dict(width_multiplier=self.width_multiplier, norm=self.norm, fc6_kernel=self.fc6_kernel,
                             fc_norm=self.fc_norm, dropout_rate=self.dropout_rate, freeze_bn=self.freeze_bn,
                             norm_axis_name=self.norm_axis_name, dtype=self.dtype)

    @property
    def input_multiple(self) -> int:
        """Pixels its input sides are zero-padded to: pool5's stride."""
        return 32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        if self.output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"FCN output_stride={self.output_stride!r} is not valid; "
                             f"valid values: {', '.join(map(str, OUTPUT_STRIDES))}")
        dtype = jnp.dtype(self.dtype)
        height, width = x.shape[1:3]
        x = pad_to_multiple(x.astype(dtype), self.input_multiple)
        backbone, options = self.backbone_config()
        features = create_backbone(backbone, **options, name="backbone")(x, train=train)
        pools = {3: features["C3"], 4: features["C4"]}
        scores = Conv(self.num_classes, (1, 1), dtype=dtype, name="score_fr")(features["fc7"])

        stride = 32
        for upsample_name in ("upscore2", "upscore_pool4"):
            if stride == self.output_stride:
                break
            stride //= 2
            pool = SKIP_POOLS[stride]
            skip = Conv(self.num_classes, (1, 1), kernel_init=nn.initializers.zeros, dtype=dtype,
                           name=f"score_pool{pool}")(pools[pool])
            scores = BilinearUpsample(2, dtype=dtype, name=upsample_name)(scores) + skip

        logits = BilinearUpsample(stride, dtype=dtype, name=f"upscore{stride}")(scores)
        return logits[:, :height, :width].astype(jnp.float32)


MODELS.register("fcn32s")(functools.partial(FCN, output_stride=32))
MODELS.register("fcn16s")(functools.partial(FCN, output_stride=16))
MODELS.register("fcn8s")(functools.partial(FCN, output_stride=8))
