"""The train state: parameters, BatchNorm statistics and optimiser state."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
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
    seed: int,
    image_shape: tuple[int, int],
) -> TrainState:
    """Initialises parameters with `init_model` on a dummy `[1, h, w, 3]` batch.

    `init_model` and `apply_model` differ only in the BatchNorm axis name (None for init
    outside pmap, "batch" for the pmapped step); their parameter trees are the same.
    """
    @jax.jit  # one compilation for init and optimiser state, not one per parameter
    def create(rng):
        params_rng, dropout_rng = jax.random.split(rng)
        dummy = jnp.zeros((1, *image_shape, 3), jnp.float32)
        variables = init_model.init({"params": params_rng, "dropout": dropout_rng}, dummy, train=False)
        return TrainState.create(apply_fn=apply_model.apply, params=variables["params"],
                                 batch_stats=variables.get("batch_stats", {}), tx=tx)

    # The "rbg" generator: XLA:CPU compiles threefry-based initialisers very slowly (30 s instead of
    # 4 s for a tiny U-Net). Parameters are deterministic per seed and backend.
    return create(jax.random.key(seed, impl="rbg"))


def unreplicate_to_host(tree: Any) -> Any:
    """The first device's copy of a pmapped pytree, as numpy (no per-leaf device computation)."""
    return jax.tree_util.tree_map(lambda x: np.asarray(x.addressable_data(0))[0], tree)
