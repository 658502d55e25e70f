"""Segmentation models (Flax linen), chosen by name: `create_model("unet", num_classes=21, ...)`.

Every semantic model maps float32 images [B, H, W, 3] to float32 logits [B, H, W, num_classes] for
any H, W and is used as `model.init(key, x)` / `model.apply(variables, x, train=...)`. Every model declares
`input_multiple`, the pixels it zero-pads its input sides to (tiled prediction aligns tiles to it). `mask_rcnn`
(`task = "detection"`) returns detections instead; see `seg_jax.models.mask_rcnn`. FCN and Mask R-CNN are built on
`seg_jax.models.backbones` (VGG-16, ResNet-50/101, a CPU-sized ResNet), which also loads torchvision / timm weights.
"""
from __future__ import annotations

from seg_jax.models.factory import MODELS, create_model, model_options
from seg_jax.models.fcn import FCN
from seg_jax.models.layers import NORMS, BilinearUpsample, ConvBlock, bilinear_kernel
from seg_jax.models.mask_rcnn import MaskRCNN  # registers "mask_rcnn" (task = "detection")
from seg_jax.models.unet import UNet

__all__ = [
    "FCN",
    "MODELS",
    "MaskRCNN",
    "NORMS",
    "BilinearUpsample",
    "ConvBlock",
    "UNet",
    "bilinear_kernel",
    "create_model",
    "model_options",
]
