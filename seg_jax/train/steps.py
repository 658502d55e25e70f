"""Pure train and eval steps, and their pmapped versions (device axis name "batch")."""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from seg_jax import metrics
from seg_jax.metrics.boundary import boundary_counts
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


def _prediction_stats(prediction, batch, *, num_classes, ignore_index, boundary_width, axis_name):
    """Statistics of one prediction `[b, h, w]`, summed over real examples of all devices."""
    example_mask = batch["mask"][:, None, None] * jnp.ones(batch["label"].shape, jnp.float32)
    per_image = metrics.batched_confusion_matrix(
        jnp.where(example_mask > 0, prediction, 0), jnp.where(example_mask > 0, batch["label"], ignore_index),
        num_classes=num_classes, ignore_index=ignore_index)
    image_miou = metrics.mean_iou(per_image)  # NaN for an image with no counted pixel
    image_valid = (batch["mask"] > 0) & ~jnp.isnan(image_miou)
    correct, total = boundary_counts(prediction, batch["label"], width=boundary_width, ignore_index=ignore_index,
                                     example_mask=batch["mask"])
    stats = {
        "confusion": per_image.sum(0),
        "per_image_iou_sum": jnp.sum(jnp.where(image_valid, image_miou, 0.0)),
        "per_image_count": jnp.sum(image_valid),
        "boundary_correct": correct,
        "boundary_total": total,
    }
    return jax.lax.psum(stats, axis_name)


def eval_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    num_classes: int,
    ignore_index: int,
    boundary_width: int = 3,
    crf_fn: Callable | None = None,
    image_mean: tuple[float, float, float] = (0.0, 0.0, 0.0),
    image_std: tuple[float, float, float] = (1.0, 1.0, 1.0),
    axis_name: str = AXIS,
) -> dict[str, jax.Array]:
    """Predictions and summed statistics for one device's shard of an eval batch (under pmap).

    Args:
      batch: `image` `[b, h, w, 3]` normalised, `label` `[b, h, w]`, `mask` float32 `[b]` (0 = padding).
      boundary_width: half-width in pixels of the band around true edges for boundary accuracy.
      crf_fn: optional `(logits, image_0_255) -> probabilities`; when given, every statistic is also
        computed for the CRF-refined prediction, under the key prefix `crf/`.
      image_mean, image_std: the normalisation, undone for the CRF's colour kernel (0..255 units).

    Returns:
      Summed over real examples of all devices: `confusion` int32 `[N, N]`, (`per_image_iou_sum`,
      `per_image_count`) of the per-image mean IoU, (`boundary_correct`, `boundary_total`). Of this
      device: `prediction` int32 `[b, h, w]`, `probabilities` float32 `[b, h, w, N]` (and `crf/` twins).
    """
    logits = state.apply_fn(state.variables, batch["image"], train=False)
    stats = functools.partial(_prediction_stats, batch=batch, num_classes=num_classes, ignore_index=ignore_index,
                              boundary_width=boundary_width, axis_name=axis_name)
    prediction = jnp.argmax(logits, -1).astype(jnp.int32)
    out = {**stats(prediction), "prediction": prediction, "probabilities": jax.nn.softmax(logits, -1)}
    if crf_fn is not None:
        image = batch["image"] * jnp.asarray(image_std) + jnp.asarray(image_mean)
        probabilities = crf_fn(logits, image)
        prediction = jnp.argmax(probabilities, -1).astype(jnp.int32)
        out.update({f"crf/{k}": v for k, v in stats(prediction).items()})
        out.update({"crf/prediction": prediction, "crf/probabilities": probabilities})
    return out


def pmapped_train_step(**options) -> Callable:
    """`train_step` bound to its options, pmapped over local devices; the state is donated."""
    return jax.pmap(functools.partial(train_step, **options), axis_name=AXIS, in_axes=(0, 0, None),
                    donate_argnums=(0,))


def pmapped_eval_step(**options) -> Callable:
    return jax.pmap(functools.partial(eval_step, **options), axis_name=AXIS)
