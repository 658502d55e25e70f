"""The backbone registry and `create_backbone`."""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn

from seg_jax.models.backbones.basic_resnet import ResNet
from seg_jax.models.backbones.resnet import DEPTHS, BottleneckResNet
from seg_jax.models.backbones.vgg import VGG16
from seg_jax.registry import Registry, module_options

# name → a Module class, or a functools.partial of one that fixes the options the name implies.
BACKBONES: Registry[Callable[..., nn.Module]] = Registry("backbone")
BACKBONES.register("vgg16")(VGG16)
BACKBONES.register("resnet")(ResNet)  # basic blocks, any depths and widths; no torchvision weights
for _name, _depths in DEPTHS.items():
    BACKBONES.register(_name)(functools.partial(BottleneckResNet, depths=_depths))

def backbone_options(name: str) -> list[str]:
    """The keyword options `create_backbone(name, ...)` accepts, sorted."""
    return module_options(BACKBONES.get(name))


def create_backbone(name: str, /, **options: Any) -> nn.Module:
    """The backbone registered as `name` (`BACKBONES.names()`), a Flax module: `apply(variables, images
    [B, H, W, 3], train=False)` → {"C1": stride 2, ..., "C5": stride 32} float NHWC (VGG-16 also "fc7").

    Args:
        name: "vgg16", "resnet50", "resnet101" or "resnet".
        **options: the backbone's options (e.g. `width_multiplier`, `norm`, `freeze_bn`, `dtype`); `name=` sets
            the Flax module name when it is built inside a model.

    Raises:
        KeyError: unknown `name` (the message lists the registered ones).
        TypeError: an option the backbone does not have (named, with the valid ones).
    """
    module_name = options.pop("name", None)
    unknown = sorted(set(options) - set(backbone_options(name)))
    if unknown:
        raise TypeError(f"backbone {name!r} has no option(s) {', '.join(unknown)}; "
                        f"valid options: {', '.join(backbone_options(name))}")
    return BACKBONES.get(name)(**options, name=module_name)
