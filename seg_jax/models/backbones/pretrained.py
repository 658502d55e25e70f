"""Pretrained backbone variables from a torchvision / timm state dict, and putting them into a model's variables.

- `load_pretrained(path, name, **options)`: the file's tensors renamed and re-laid-out (`layout`) as the
  backbone's Flax variables; one `PretrainedWeightsError` names the first missing, unexpected or mis-shaped key.
- `replace_backbone(variables, backbone_variables, path=...)`: a model's initialised variables with the backbone
  subtree replaced, shapes checked.
- `frozen_prefixes(params, ...)`: which parameters `model.freeze_stages` / `model.freeze_bn` keep fixed.
"""
from __future__ import annotations

import pathlib
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from seg_jax.models.backbones import layout
from seg_jax.models.backbones.factory import create_backbone
from seg_jax.models.backbones.weights_file import read_state_dict

IGNORED_SUFFIXES = (".num_batches_tracked",)  # BatchNorm's step counter: no Flax counterpart
_PROBE_SIZE = 64  # pixels; any multiple of 32 gives the same variable shapes


class PretrainedWeightsError(ValueError):
    """A state dict that does not fit the backbone; the message names the file and the first bad key."""


def variable_shapes(backbone) -> dict[str, Any]:
    """The backbone's variables as a tree of `jax.ShapeDtypeStruct` (no compilation, no initialisation)."""
    probe = jnp.zeros((1, _PROBE_SIZE, _PROBE_SIZE, 3), jnp.float32)
    return jax.eval_shape(lambda: backbone.init(jax.random.key(0, impl="rbg"), probe))


def _get(tree: Mapping, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _renamed(state: Mapping[str, np.ndarray], renames: Mapping[str, str]) -> dict[str, np.ndarray]:
    out = {}
    for key, value in state.items():
        prefix = next((p for p in renames if key.startswith(p)), None)
        out[renames[prefix] + key[len(prefix):] if prefix else key] = value
    return out


def load_pretrained(path: str | pathlib.Path, name: str, **options: Any) -> dict[str, dict]:
    """The variables of backbone `name` (`create_backbone(name, **options)`) from a state-dict file.

    Args:
        path: `.safetensors`, `.npz` or (with torch installed) `.pth` / `.pt` holding torchvision's (or timm's)
            state dict: e.g. `features.0.weight` (VGG-16), `layer1.0.conv1.weight` (ResNet-50).
        name: "vgg16" (norm="none": torchvision's vgg16; norm="batch": vgg16_bn), "resnet50" or "resnet101".
        **options: the backbone's options, which fix the expected shapes (e.g. `width_multiplier`, `fc6_kernel`).

    Returns:
        {"params": ..., "batch_stats": ...} (batch_stats only with BatchNorm) float32 in Flax layouts: conv
        kernels HWIO, fc6 / fc7 as 7×7 / 1×1 conv kernels (VGG), BatchNorm scale/bias and running mean/var. The
        classifier (fc / fc8) and `num_batches_tracked` are skipped.

    Raises:
        FileNotFoundError, weights_file.WeightsFileError: no file, or not a readable state dict.
        PretrainedWeightsError: the first key the backbone needs that the file lacks, the first key of the file
            the backbone does not have, or the first key whose shape differs (file and expected shape in torch's
            layout); or a backbone with options torchvision has no weights for.
    """
    backbone = create_backbone(name, **options)
    if not hasattr(backbone, "torch_layout"):
        raise PretrainedWeightsError(f"backbone {name!r} has no torchvision layout to load {str(path)!r} into; "
                                     "pretrained weights exist for vgg16, resnet50 and resnet101")
    try:
        entries = backbone.torch_layout()
    except ValueError as e:
        raise PretrainedWeightsError(f"{path}: {e}") from None
    state = read_state_dict(path)  # read after the cheap checks above
    state = {key: value for key, value in _renamed(state, backbone.key_renames).items()
             if not key.endswith(IGNORED_SUFFIXES) and not backbone.skipped(key)}
    described = f"backbone {name!r}" + (f" ({', '.join(f'{k}={v!r}' for k, v in sorted(options.items()))})"
                                        if options else "")
    wanted = {entry.key for entry in entries}
    missing = next((entry for entry in entries if entry.key not in state), None)
    if missing is not None:
        raise PretrainedWeightsError(
            f"{path}: missing key {missing.key!r}, which {described} needs for {'/'.join(missing.path)}; the file "
            f"has {len(state)} usable keys" + (f", e.g. {', '.join(map(repr, sorted(state)[:3]))}" if state else ""))
    unexpected = next((key for key in sorted(state) if key not in wanted), None)
    if unexpected is not None:
        raise PretrainedWeightsError(
            f"{path}: unexpected key {unexpected!r}, which {described} does not have (its keys are torchvision's, "
            f"e.g. {entries[0].key!r}; is the file another architecture or depth?)")
    shapes = variable_shapes(backbone)
    variables: dict[str, dict] = {}
    for entry in entries:
        flax_shape = tuple(_get(shapes, entry.path).shape)
        array = np.asarray(state[entry.key])
        kind = "conv" if entry.kind == "fc_conv" and array.ndim == 4 else entry.kind  # timm's fc6/fc7 are convs
        expected = layout.torch_shape(flax_shape, kind)
        if array.shape != expected:
            raise PretrainedWeightsError(
                f"{path}: key {entry.key!r} has shape {tuple(array.shape)} but {described} expects {expected} "
                "(torch's layout)")
        value = layout.to_flax(array, flax_shape, kind)
        _set(variables, entry.path, _get(variables, entry.path) - value if kind == "subtract" else value)
    return variables


def replace_backbone(variables: Mapping[str, Any], backbone_variables: Mapping[str, Any], *,
                     path: tuple[str, ...] = ("backbone",)) -> dict[str, Any]:
    """`variables` (a model's, e.g. from `init`) with the subtree at `path` of every collection in
    `backbone_variables` replaced by it; nothing else changes. `path=()` replaces the whole collection.

    Raises:
        PretrainedWeightsError: naming the first variable whose presence or shape differs.
    """
    out = {collection: dict(tree) for collection, tree in variables.items()}
    for collection, loaded in backbone_variables.items():
        try:
            current = _get(variables[collection], path)
        except KeyError:
            raise PretrainedWeightsError(f"the model has no {collection}/{'/'.join(path)} to load a backbone "
                                         "into") from None
        flat_now = {k: v for k, v in jax.tree_util.tree_flatten_with_path(current)[0]}
        flat_new = {k: v for k, v in jax.tree_util.tree_flatten_with_path(loaded)[0]}
        for key in sorted(set(flat_now) | set(flat_new), key=str):
            where = f"{collection}/{'/'.join(path)}{jax.tree_util.keystr(key)}"
            if key not in flat_new or key not in flat_now:
                raise PretrainedWeightsError(f"{where}: in the {'model' if key in flat_now else 'loaded weights'} "
                                             "only")
            if tuple(np.shape(flat_now[key])) != tuple(np.shape(flat_new[key])):
                raise PretrainedWeightsError(f"{where}: the model has shape {tuple(np.shape(flat_now[key]))}, the "
                                             f"loaded weights {tuple(np.shape(flat_new[key]))}")
        replaced = jax.tree.map(lambda new, now: jnp.asarray(new, now.dtype), loaded, current)
        if not path:  # the whole model (`train.init_from` of the same network)
            out[collection] = replaced
            continue
        tree = out[collection] = _copy_path(out[collection], path)
        _set(tree, path, replaced)
    return out


def _copy_path(tree: Mapping, path: tuple[str, ...]) -> dict:
    """A copy of `tree` whose dicts along `path` are new, so setting a leaf there leaves `tree` unchanged."""
    tree = dict(tree)
    if len(path) > 1:
        tree[path[0]] = _copy_path(tree[path[0]], path[1:])
    return tree


def frozen_prefixes(params: Mapping[str, Any], *, backbone, path: tuple[str, ...] = ("backbone",),
                    freeze_stages: int = 0, freeze_bn: bool = False) -> list[str]:
    """The "/"-joined parameter-path prefixes (`seg_jax.train.optim.with_frozen`) that `model.freeze_stages` /
    `model.freeze_bn` keep fixed: the modules of the backbone's stages 1..`freeze_stages` (its `stage_of`: VGG-16
    blocks conv1..conv5, ResNet stem and layer1..layer4) and, with `freeze_bn`, its BatchNorm modules (their scales
    and biases), as detectron2's FREEZE_AT and FrozenBN. E.g. ["backbone/conv1", "backbone/layer1_0"]."""
    frozen = set()
    for key_path, _ in jax.tree_util.tree_flatten_with_path(_get(params, path))[0]:
        keys = tuple(str(getattr(k, "key", k)) for k in key_path)
        if backbone.stage_of(keys[0]) <= freeze_stages:
            frozen.add("/".join((*path, keys[0])))
        elif freeze_bn and backbone.is_batch_norm(keys[:-1]):
            frozen.add("/".join((*path, *keys[:-1])))
    return sorted(frozen)
