"""The train state: parameters, BatchNorm statistics and optimiser state."""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from seg_jax.models import backbones


class TrainState(train_state.TrainState):
    """flax's TrainState plus the `batch_stats` collection (empty dict for models without BatchNorm)."""

    batch_stats: Any = None

    @property
    def variables(self) -> dict:
        if self.batch_stats:
            return {"params": self.params, "batch_stats": self.batch_stats}
        return {"params": self.params}


def _create(rng, backbone_variables, *, init_model: nn.Module, apply_model: nn.Module,
            tx: optax.GradientTransformation, image_shape: tuple[int, int],
            backbone_path: tuple[str, ...]) -> TrainState:
    params_rng, dropout_rng = jax.random.split(rng)
    dummy = jnp.zeros((1, *image_shape, 3), jnp.float32)
    variables = init_model.init({"params": params_rng, "dropout": dropout_rng}, dummy, train=False)
    if backbone_variables is not None:  # shapes are static: checked while tracing
        variables = backbones.replace_backbone(variables, backbone_variables, path=backbone_path)
    return TrainState.create(apply_fn=apply_model.apply, params=variables["params"],
                             batch_stats=variables.get("batch_stats", {}), tx=tx)


def _key(seed: int) -> jax.Array:
    # The "rbg" generator: XLA:CPU compiles threefry-based initialisers very slowly (30 s instead of
    # 4 s for a tiny U-Net). Parameters are deterministic per seed and backend.
    return jax.random.key(seed, impl="rbg")


def create_train_state(
    *,
    init_model: nn.Module,
    apply_model: nn.Module,
    tx: optax.GradientTransformation,
    seed: int,
    image_shape: tuple[int, int],
    backbone_variables: dict | None = None,
    backbone_path: tuple[str, ...] = ("backbone",),
) -> TrainState:
    """Initialises parameters with `init_model` on a dummy `[1, h, w, 3]` batch; with `backbone_variables`
    (`seg_jax.models.backbones.load_pretrained`), the backbone's subtree at `backbone_path` of every collection is
    replaced by them before the optimiser state is made.

    `init_model` and `apply_model` differ only in the BatchNorm axis name (None for init
    outside pmap, "batch" for the pmapped step); their parameter trees are the same.

    Raises:
        backbones.PretrainedWeightsError: `backbone_variables` differ from the model's backbone (names the first).
    """
    # one compilation for init and optimiser state, not one per parameter
    create = jax.jit(functools.partial(_create, init_model=init_model, apply_model=apply_model, tx=tx,
                                       image_shape=image_shape, backbone_path=backbone_path))
    return create(_key(seed), backbone_variables)


def restore_target(
    *,
    init_model: nn.Module,
    apply_model: nn.Module,
    tx: optax.GradientTransformation,
    image_shape: tuple[int, int],
) -> TrainState:
    """The structure of `create_train_state`'s state with host zeros for its values (`np.zeros`: no memory is
    touched): what a checkpoint is restored into for evaluation, prediction and tuning, which then need neither
    compile nor run the initialisation (3-7 s per call on 2 cores without a compilation cache:
    `benchmarks/restore.py`)."""
    shapes = jax.eval_shape(functools.partial(_create, init_model=init_model, apply_model=apply_model, tx=tx,
                                              image_shape=image_shape, backbone_path=()), _key(0), None)
    return jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def unreplicate_to_host(tree: Any) -> Any:
    """The first device's copy of a pmapped pytree, as numpy (no per-leaf device computation)."""
    return jax.tree_util.tree_map(lambda x: np.asarray(x.addressable_data(0))[0], tree)
