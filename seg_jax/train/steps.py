"""Pure train and eval steps, and their pmapped versions (device axis name "batch")."""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from seg_jax import metrics
from seg_jax.train.state import TrainState

AXIS = "batch"


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    rng: jax.Array,
    *,
    loss_fn: Callable,
    learning_rate_fn: optax.Schedule,
    class_weights: jax.Array | None,
    ignore_index: int,
    axis_name: str = AXIS,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimiser step on one device's shard of the global batch (call under pmap).

    Args:
      state: replicated train state.
      batch: `image` float32 `[b, h, w, 3]`, `label` int32 `[b, h, w]`, `weights` float32 `[b, h, w]`.
      rng: the run's base key; folded with the step and the device index here, so every step
        and device draws different dropout masks and a resumed run draws the same ones.

    Returns:
      The new state (identical on every device) and metrics averaged over devices:
      `loss`, one `loss/<name>` per term, `learning_rate`, `grad_norm`, `pixel_accuracy`.
    """
    rng = jax.random.fold_in(jax.random.fold_in(rng, state.step), jax.lax.axis_index(axis_name))

    def compute_loss(params):
        variables = {**state.variables, "params": params}
        logits, updates = state.apply_fn(variables, batch["image"], train=True, rngs={"dropout": rng},
                                         mutable=["batch_stats"])
        total, terms = loss_fn(logits, batch["label"], weights=batch["weights"], class_weights=class_weights,
                               ignore_index=ignore_index, axis_name=axis_name)
        return total, (terms, updates, logits)

    (total, (terms, updates, logits)), grads = jax.value_and_grad(compute_loss, has_aux=True)(state.params)
    grads = jax.lax.pmean(grads, axis_name)
    new_state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", state.batch_stats))

    valid = (batch["label"] != ignore_index) & (batch["weights"] > 0)
    correct = jnp.sum((jnp.argmax(logits, -1) == batch["label"]) & valid)
    out = {"loss": total, **{f"loss/{k}": v for k, v in terms.items()}}
    out = jax.lax.pmean(out, axis_name)
    out["pixel_accuracy"] = jax.lax.psum(correct, axis_name) / jnp.maximum(jax.lax.psum(jnp.sum(valid), axis_name), 1)
    out["learning_rate"] = learning_rate_fn(state.step)
    out["grad_norm"] = optax.tree_utils.tree_norm(grads)
    return new_state, out


def eval_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    num_classes: int,
    ignore_index: int,
    axis_name: str = AXIS,
) -> dict[str, jax.Array]:
    """Predictions and summed statistics for one device's shard of an eval batch (under pmap).

    Args:
      batch: `image` `[b, h, w, 3]`, `label` `[b, h, w]`, `mask` float32 `[b]` (0 = padding).

    Returns:
      `confusion` int32 `[N, N]` summed over real examples of all devices; `per_image_iou_sum`
      and `per_image_count`, the (sum, count) of per-image mean IoU over all devices;
      `prediction` int32 `[b, h, w]` and `probabilities` float32 `[b, h, w, N]` of this device.
    """
    logits = state.apply_fn(state.variables, batch["image"], train=False)
    prediction = jnp.argmax(logits, -1).astype(jnp.int32)
    example_mask = batch["mask"][:, None, None] * jnp.ones(batch["label"].shape, jnp.float32)
    per_image = metrics.batched_confusion_matrix(
        jnp.where(example_mask > 0, prediction, 0), jnp.where(example_mask > 0, batch["label"], ignore_index),
        num_classes=num_classes, ignore_index=ignore_index)
    image_miou = metrics.mean_iou(per_image)  # NaN for an image with no counted pixel
    image_valid = (batch["mask"] > 0) & ~jnp.isnan(image_miou)
    return {
        "confusion": jax.lax.psum(per_image.sum(0), axis_name),
        "per_image_iou_sum": jax.lax.psum(jnp.sum(jnp.where(image_valid, image_miou, 0.0)), axis_name),
        "per_image_count": jax.lax.psum(jnp.sum(image_valid), axis_name),
        "prediction": prediction,
        "probabilities": jax.nn.softmax(logits, -1),
    }


def pmapped_train_step(**options) -> Callable:
    """`train_step` bound to its options, pmapped over local devices; the state is donated."""
    return jax.pmap(functools.partial(train_step, **options), axis_name=AXIS, in_axes=(0, 0, None),
                    donate_argnums=(0,))


def pmapped_eval_step(**options) -> Callable:
    return jax.pmap(functools.partial(eval_step, **options), axis_name=AXIS)
