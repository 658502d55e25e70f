"""How a backbone's variables are named in a torchvision / timm state dict: one `TorchEntry` per tensor.

Layouts (`kind`) and their conversion to Flax:
- "conv": a Conv2d weight, torch [O, I, kH, kW] → Flax HWIO [kH, kW, I, O].
- "fc_conv": a Linear weight [O, I·kH·kW] used as a kH×kW conv (FCN's convolutionalisation; torch flattens
  its input in C, H, W order) → HWIO [kH, kW, I, O]; a conv weight [O, I, kH, kW] (timm's VGG) is read as "conv".
- "dense": a Linear weight [O, I] → Flax Dense [I, O].
- "vector": biases, BatchNorm weight / bias / running_mean / running_var, unchanged.
- "subtract": a vector subtracted from the variable an earlier entry set: the bias of a conv followed by
  BatchNorm, folded into its running mean (BN(conv(x) + b) with mean m is BN(conv(x)) with mean m - b).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class TorchEntry(NamedTuple):
    key: str                 # the state-dict key, e.g. "layer1.0.bn1.running_var"
    path: tuple[str, ...]    # (collection, module, ..., leaf) in the backbone's Flax variables
    kind: str                # "conv", "fc_conv", "dense", "vector" or "subtract"


def conv(key: str, module: tuple[str, ...], *, bias: bool) -> list[TorchEntry]:
    """A Conv2d `key` (prefix, e.g. "features.0") as Flax module path `module`."""
    entries = [TorchEntry(f"{key}.weight", ("params", *module, "kernel"), "conv")]
    return entries + ([TorchEntry(f"{key}.bias", ("params", *module, "bias"), "vector")] if bias else [])


def batch_norm(key: str, module: tuple[str, ...]) -> list[TorchEntry]:
    """A BatchNorm2d: weight/bias → params scale/bias, running_mean/running_var → batch_stats mean/var."""
    return [TorchEntry(f"{key}.weight", ("params", *module, "scale"), "vector"),
            TorchEntry(f"{key}.bias", ("params", *module, "bias"), "vector"),
            TorchEntry(f"{key}.running_mean", ("batch_stats", *module, "mean"), "vector"),
            TorchEntry(f"{key}.running_var", ("batch_stats", *module, "var"), "vector")]


def torch_shape(flax_shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
    """The shape the state dict must hold for a Flax variable of `flax_shape` stored as `kind`."""
    if kind == "conv":
        height, width, fan_in, fan_out = flax_shape
        return (fan_out, fan_in, height, width)
    if kind == "fc_conv":
        height, width, fan_in, fan_out = flax_shape
        return (fan_out, fan_in * height * width)
    if kind == "dense":
        return tuple(reversed(flax_shape))
    return tuple(flax_shape)


def to_flax(array: np.ndarray, flax_shape: tuple[int, ...], kind: str) -> np.ndarray:
    """`array` (already checked to have `torch_shape(flax_shape, kind)`) in the Flax layout, float32."""
    array = np.asarray(array, np.float32)
    if kind == "fc_conv":
        height, width, fan_in, fan_out = flax_shape
        array = array.reshape(fan_out, fan_in, height, width)  # torch.flatten of [C, H, W] → C-major
        kind = "conv"
    if kind == "conv":
        return np.ascontiguousarray(array.transpose(2, 3, 1, 0))
    if kind == "dense":
        return np.ascontiguousarray(array.T)
    return array
