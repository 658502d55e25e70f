"""The loss registry and weighted combinations of its entries."""
from __future__ import annotations

from typing import Callable, Mapping

import jax
import jax.numpy as jnp

from seg_jax.registry import Registry

LOSSES: Registry[Callable[..., jax.Array]] = Registry("loss")

LossFn = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]


def make_loss_fn(loss_weights: Mapping[str, float]) -> LossFn:
    """A weighted sum of registered losses, e.g. `{"cross_entropy": 1.0, "dice": 1.0}`.

    Returns `fn(logits, labels, *, weights, class_weights, ignore_index, axis_name)` giving
    `(total, {name: term})`, the terms unweighted so logs show each loss on its own scale.
    An unknown name fails here, when the experiment is built, listing the valid names.
    """
    if not loss_weights:
        raise ValueError(f"config.loss is empty; give weights for some of: {', '.join(LOSSES.names())}")
    terms = {name: (LOSSES.get(name), float(w)) for name, w in dict(loss_weights).items()}

    def loss_fn(logits, labels, **options):
        values = {name: fn(logits, labels, **options) for name, (fn, _) in terms.items()}
        total = sum((w * values[name] for name, (_, w) in terms.items()), jnp.zeros((), jnp.float32))
        return total, values

    return loss_fn
