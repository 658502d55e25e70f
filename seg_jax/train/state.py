"""The train state: parameters, BatchNorm statistics and optimiser state."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
    """flax's TrainState plus the `batch_stats` collection (empty dict for models without BatchNorm)."""

    batch_stats: Any = None

    @property
    def variables(self) -> dict:
        if self.batch_stats:
            return {"params": self.params, "batch_stats": self.batch_stats}
        return {"params": self.params}


def create_train_state(
    *,
    init_model: nn.Module,
    apply_model: nn.Module,
    tx: optax.GradientTransformation,
    rng: jax.Array,
    image_shape: tuple[int, int],
) -> TrainState:
    """Initialises parameters with `init_model` on a dummy `[1, h, w, 3]` batch.

    `init_model` and `apply_model` differ only in the BatchNorm axis name (None for init
    outside pmap, "batch" for the pmapped step); their parameter trees are the same.
    """
    params_rng, dropout_rng = jax.random.split(rng)
    dummy = jnp.zeros((1, *image_shape, 3), jnp.float32)
    variables = jax.jit(lambda r, d: init_model.init({"params": r, "dropout": dropout_rng}, d, train=False))(
        params_rng, dummy)
    return TrainState.create(
        apply_fn=apply_model.apply,
        params=variables["params"],
        batch_stats=variables.get("batch_stats", {}),
        tx=tx,
    )
