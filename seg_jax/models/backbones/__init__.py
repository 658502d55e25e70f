"""Backbones as Flax modules, chosen by name, with pretrained weights read from users' own torchvision / timm files.

    backbone = create_backbone("resnet50")                       # or "resnet101", "vgg16", "resnet" (CPU-sized)
    variables = load_pretrained("resnet50.safetensors", "resnet50")
    features = backbone.apply(variables, images)                 # images float32 [B, H, W, 3], H, W multiples of 32
    features["C2"], ..., features["C5"]                          # NHWC, strides 4..32 ("C1": stride 2)

Images must be normalised as the weights expect: torchvision's and timm's ImageNet models take RGB with ImageNet's
mean and std, the data pipeline's default (`data.mean`, `data.std`; `model.pretrained_normalization` checks them).
Nothing is downloaded: `python -m seg_jax.models.backbones.export_torchvision vgg16 vgg16.safetensors` writes a
file from torchvision on a machine with internet.
"""
from __future__ import annotations

from seg_jax.models.backbones.basic_resnet import ResNet
from seg_jax.models.backbones.factory import BACKBONES, backbone_options, create_backbone
from seg_jax.models.backbones.pretrained import (PretrainedWeightsError, frozen_prefixes, load_pretrained,
                                                 replace_backbone)
from seg_jax.models.backbones.resnet import BottleneckResNet
from seg_jax.models.backbones.vgg import VGG16

__all__ = ["BACKBONES", "BottleneckResNet", "PretrainedWeightsError", "ResNet", "VGG16", "backbone_options",
           "create_backbone", "frozen_prefixes", "load_pretrained", "replace_backbone"]
