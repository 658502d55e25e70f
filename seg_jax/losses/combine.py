"""The loss registry and weighted combinations of its entries, with per-loss options from the config.

Two kinds of entry: pixel losses of the class logits (`loss(logits, labels, *, weights, class_weights,
ignore_index, axis_name)`), and `DistanceTerm`s, losses of the model's distance channel against the batch's
`distance` target (`loss(distance, target, *, weights, axis_name)`). A config whose loss has a distance term
trains a model with one more output channel (`needs_distance`, `seg_jax.tasks.semantic`).
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from seg_jax.labels import IGNORE_INDEX
from seg_jax.registry import Registry

LOSSES: Registry[Callable[..., jax.Array]] = Registry("loss")

LossFn = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]


@dataclasses.dataclass(frozen=True)
class DistanceTerm:
    """A registered loss that reads the predicted distance map `[B, H, W]` and the batch's `distance` target,
    `fn(distance, target, *, weights, axis_name, **options)`, instead of the class logits."""

    fn: Callable[..., jax.Array]


def _function(entry: Any) -> Callable[..., jax.Array]:
    return entry.fn if isinstance(entry, DistanceTerm) else entry


def needs_distance(loss_config: Mapping[str, Any]) -> bool:
    """Whether `config.loss` has a `DistanceTerm` (then the model has a distance channel). Unknown names are
    left to `make_loss_fn` to report."""
    if hasattr(loss_config, "to_dict"):
        loss_config = loss_config.to_dict()
    return any(name in LOSSES and isinstance(LOSSES.get(name), DistanceTerm) for name in dict(loss_config or {}))

# Keywords of the common pixel-loss signature: supplied by the task, never by the config.
COMMON_KEYWORDS = frozenset({"weights", "class_weights", "ignore_index", "axis_name"})


def loss_options(fn: Callable) -> dict[str, Any]:
    """The config options of a loss function: its keyword-only parameters beyond the common ones, with defaults."""
    return {name: p.default for name, p in inspect.signature(fn).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in COMMON_KEYWORDS}


def parse_term(name: str, value: Any, *, options: Mapping[str, Any]) -> tuple[float, dict[str, Any]]:
    """`(weight, options)` of one `config.loss` entry: a bare number is the weight, a mapping holds `weight`
    (default 1.0) and the loss's options.

    Raises:
        ValueError: an option `options` does not list (the message names the loss and lists its options),
            or a weight that is not a number.
    """
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, Mapping):
        given = dict(value)
        weight = given.pop("weight", 1.0)
    else:
        weight, given = value, {}
    unknown = sorted(set(given) - set(options))
    if unknown:
        valid = ", ".join(["weight", *sorted(options)])
        raise ValueError(f"loss {name!r} has no option(s) {', '.join(unknown)}; its options: {valid}")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise ValueError(f"loss {name!r}: weight must be a number, got {weight!r}")
    return float(weight), given


def make_loss_fn(loss_config: Mapping[str, Any]) -> LossFn:
    """A weighted sum of registered pixel losses, e.g. `{"cross_entropy": 1.0, "dice": {"weight": 1.0, "eps": 1e-6}}`.

    Returns `fn(logits, labels, *, weights, class_weights, ignore_index, axis_name, distance=None,
    distance_target=None)` giving `(total, {name: term})`, the terms unweighted so logs show each loss on its own
    scale. Distance terms get `distance` and `distance_target` (float `[B, H, W]`) and, as weights, 1 on the
    labelled pixels with a positive weight (the weight map's values are the class terms').
    An unknown name or option fails here, when the experiment is built, listing the valid ones.
    """
    if hasattr(loss_config, "to_dict"):
        loss_config = loss_config.to_dict()
    if not loss_config:
        raise ValueError(f"config.loss is empty; give weights for some of: {', '.join(LOSSES.names())}")
    terms = {}
    for name, value in dict(loss_config).items():
        entry = LOSSES.get(name)
        weight, options = parse_term(name, value, options=loss_options(_function(entry)))
        if isinstance(entry, DistanceTerm):  # its option values checked on one pixel: a bad one fails here
            entry.fn(jnp.zeros((1, 1, 1)), jnp.ones((1, 1, 1)), **options)
        terms[name] = (entry, weight, options)

    def term(entry, options, logits, labels, *, distance, distance_target, **common):
        if not isinstance(entry, DistanceTerm):
            return entry(logits, labels, **common, **options)
        valid = labels != common.get("ignore_index", IGNORE_INDEX)
        if common.get("weights") is not None:
            valid = valid & (common["weights"] > 0)
        return entry.fn(distance, distance_target, weights=valid.astype(jnp.float32),
                        axis_name=common.get("axis_name"), **options)

    def loss_fn(logits, labels, *, distance=None, distance_target=None, **common):
        values = {name: term(entry, options, logits, labels, distance=distance, distance_target=distance_target,
                             **common) for name, (entry, _, options) in terms.items()}
        total = sum((w * values[name] for name, (_, w, _) in terms.items()), jnp.zeros((), jnp.float32))
        return total, values

    return loss_fn
