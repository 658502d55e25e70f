"""The one train step of every task, and its pmapped version (device axis name "batch").

The per-device code uses the axis name only for collectives (pmean/psum/axis_index), so the same function
runs under `jax.pmap` today and under `jax.jit` + `shard_map` with the same axis name.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from seg_jax.train.state import TrainState

AXIS = "batch"


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    rng: jax.Array,
    *,
    task: Any,
    learning_rate_fn: optax.Schedule,
    axis_name: str = AXIS,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimiser step on one device's shard of the global batch (call under pmap).

    Args:
      state: replicated train state.
      batch: the keys of `task.train_keys` (e.g. `image` float32 `[b, h, w, 3]`, `label` int32 `[b, h, w]`).
      rng: the run's base key; folded with the step and the device index here, so every step
        and device draws different random numbers and a resumed run draws the same ones.
      task: a `seg_jax.tasks` task; its `loss(variables, batch, rng, axis_name=...)` gives
        `(total, terms, mutable updates, {name: (sum, count)})`.

    Returns:
      The new state (identical on every device) and metrics: `loss` and one `loss/<term>` per term (averaged
      over devices), each of the task's `(sum, count)` metrics as Σsum / Σcount over devices, `learning_rate`,
      `grad_norm`.
    """
    rng = jax.random.fold_in(jax.random.fold_in(rng, state.step), jax.lax.axis_index(axis_name))

    def compute_loss(params):
        total, terms, updates, counts = task.loss({**state.variables, "params": params}, batch, rng,
                                                  axis_name=axis_name)
        return total, (terms, updates, counts)

    (total, (terms, updates, counts)), grads = jax.value_and_grad(compute_loss, has_aux=True)(state.params)
    grads = jax.lax.pmean(grads, axis_name)
    new_state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", state.batch_stats))
    out = jax.lax.pmean({"loss": total, **{f"loss/{k}": v for k, v in terms.items()}}, axis_name)
    for name, (value, count) in counts.items():
        out[name] = jax.lax.psum(value, axis_name) / jnp.maximum(jax.lax.psum(count, axis_name), 1)
    out["learning_rate"] = learning_rate_fn(state.step)
    out["grad_norm"] = optax.tree_utils.tree_norm(grads)
    return new_state, out


def replicate(tree: Any) -> Any:
    """`tree` copied to every local device: leaves gain a leading axis of size D (`jax.local_device_count()`),
    sharded over a mesh of the local devices with axis `AXIS` — where the pmapped steps put their outputs (jax ≥ 0.8
    runs pmap on `shard_map`), so a step fed this state does not compile again on its own output. (flax's
    `jax_utils.replicate`, built on the deprecated `jax.device_put_replicated` and later on a mesh axis of another
    name, cost that second compilation: 15 s for the default U-Net.)"""
    devices = jax.local_devices()
    sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(np.array(devices), (AXIS,)),
                                          jax.sharding.PartitionSpec(AXIS))

    def copies(x):
        row = x[None] if isinstance(x, jax.Array) else np.asarray(x)[None]  # [1, ...] once, then one copy per device
        return jax.make_array_from_single_device_arrays((len(devices), *row.shape[1:]), sharding,
                                                        [jax.device_put(row, device) for device in devices])
    return jax.tree_util.tree_map(copies, tree)


def pmapped_train_step(**options) -> Callable:
    """`train_step` bound to its options, pmapped over local devices; the state is donated."""
    return jax.pmap(functools.partial(train_step, **options), axis_name=AXIS, in_axes=(0, 0, None),
                    donate_argnums=(0,))
