"""The loss registry and weighted combinations of its entries, with per-loss options from the config."""
from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from seg_jax.registry import Registry

LOSSES: Registry[Callable[..., jax.Array]] = Registry("loss")

LossFn = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]

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

    Returns `fn(logits, labels, *, weights, class_weights, ignore_index, axis_name)` giving
    `(total, {name: term})`, the terms unweighted so logs show each loss on its own scale.
    An unknown name or option fails here, when the experiment is built, listing the valid ones.
    """
    if hasattr(loss_config, "to_dict"):
        loss_config = loss_config.to_dict()
    if not loss_config:
        raise ValueError(f"config.loss is empty; give weights for some of: {', '.join(LOSSES.names())}")
    terms = {}
    for name, value in dict(loss_config).items():
        fn = LOSSES.get(name)
        weight, options = parse_term(name, value, options=loss_options(fn))
        terms[name] = (fn, weight, options)

    def loss_fn(logits, labels, **common):
        values = {name: fn(logits, labels, **common, **options) for name, (fn, _, options) in terms.items()}
        total = sum((w * values[name] for name, (_, w, _) in terms.items()), jnp.zeros((), jnp.float32))
        return total, values

    return loss_fn
