"""Semantic segmentation metrics from confusion matrices (rows = truth, columns = prediction)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from seg_jax.compiled import compiled
from seg_jax.labels import IGNORE_INDEX

# Stated in every evaluation record so a number can be traced to its definition.
DEFINITIONS = {
    "mean_iou": "IoU per class from ONE confusion matrix summed over the whole split, then the mean "
                "over classes present in the truth or the prediction of the split",
    "per_image_mean_iou": "for each image, the mean IoU over classes present in that image's truth or "
                          "prediction; then the mean over images",
    "pixel_accuracy": "correct non-ignored pixels / non-ignored pixels, over the whole split",
    "dice": "per-class Dice/F1 2·TP / (2·TP + FP + FN) from the summed confusion matrix",
    "absent_classes": "a class absent from both truth and prediction has no IoU (NaN) and is left "
                      "out of the means",
}


@compiled(static=("num_classes", "ignore_index"))
def confusion_matrix(
    predictions: jax.Array,
    labels: jax.Array,
    *,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    weights: jax.Array | None = None,
) -> jax.Array:
    """Counts `[N, N]` int32 with rows = truth, columns = prediction (jit-able).

    Args:
      predictions: int `[...]` predicted classes.
      labels: int `[...]` true classes; `ignore_index` (or anything outside [0, N)) not counted.
      num_classes: N.
      weights: optional `[...]` 0/1 mask, e.g. to drop padded examples.
    """
    valid = (labels != ignore_index) & (labels >= 0) & (labels < num_classes)
    if weights is not None:
        valid = valid & (weights > 0)
    index = jnp.where(valid, labels * num_classes + predictions, 0).reshape(-1)
    counts = jnp.bincount(index, weights=valid.reshape(-1).astype(jnp.int32), length=num_classes**2)
    return counts.reshape(num_classes, num_classes).astype(jnp.int32)


@compiled(static=("num_classes", "ignore_index"))
def batched_confusion_matrix(predictions, labels, *, num_classes, ignore_index=IGNORE_INDEX):
    """One confusion matrix per image: `[B, ...]` → `[B, N, N]` int32."""
    fn = lambda p, t: confusion_matrix(p, t, num_classes=num_classes, ignore_index=ignore_index)
    return jax.vmap(fn)(predictions, labels)


def iou_per_class(cm) -> jax.Array:
    """`[..., N, N]` → IoU `[..., N]` float32 = TP / (TP + FP + FN); NaN for a class absent
    from both truth and prediction. jit-able; also used on device for per-image IoU."""
    cm = jnp.asarray(cm, jnp.float32)
    tp = jnp.diagonal(cm, axis1=-2, axis2=-1)
    union = cm.sum(-1) + cm.sum(-2) - tp
    return jnp.where(union > 0, tp / jnp.where(union > 0, union, 1.0), jnp.nan)


def mean_iou(cm) -> jax.Array:
    """`[..., N, N]` → mean IoU `[...]` over classes present in truth or prediction (NaN if none)."""
    return jnp.nanmean(iou_per_class(cm), axis=-1)


def dice_per_class(cm) -> jax.Array:
    """`[..., N, N]` → Dice/F1 `[..., N]` = 2·TP / (2·TP + FP + FN); NaN for an absent class."""
    cm = jnp.asarray(cm, jnp.float32)
    tp = jnp.diagonal(cm, axis1=-2, axis2=-1)
    den = cm.sum(-1) + cm.sum(-2)
    return jnp.where(den > 0, 2 * tp / jnp.where(den > 0, den, 1.0), jnp.nan)


def pixel_accuracy(cm) -> jax.Array:
    """`[..., N, N]` → correct / counted pixels `[...]` (NaN if nothing was counted)."""
    cm = jnp.asarray(cm, jnp.float32)
    total = cm.sum((-2, -1))
    return jnp.where(total > 0, jnp.trace(cm, axis1=-2, axis2=-1) / jnp.where(total > 0, total, 1.0), jnp.nan)


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.any(~np.isnan(values)) else float("nan")


def summarize(cm, *, class_names, per_image_ious=None, ignore_index=IGNORE_INDEX) -> dict:
    """The evaluation record: dataset-level metrics, per-class IoU/Dice by name, and definitions."""
    # Counts of a whole split can pass float32's exact range; the host works in float64.
    cm = np.asarray(cm, np.float64)
    iou = np.asarray(iou_per_class(cm / max(cm.sum(), 1.0)), np.float64)
    dice = np.asarray(dice_per_class(cm / max(cm.sum(), 1.0)), np.float64)
    record = {
        "mean_iou": _nanmean(iou),
        "pixel_accuracy": float(np.trace(cm) / cm.sum()) if cm.sum() > 0 else float("nan"),
        "mean_dice": _nanmean(dice),
        "iou": {name: float(v) for name, v in zip(class_names, iou)},
        "dice": {name: float(v) for name, v in zip(class_names, dice)},
    }
    if per_image_ious is not None:
        values = np.asarray(per_image_ious, np.float64)
        record["per_image_mean_iou"] = _nanmean(values)
        record["num_images"] = int(values.size)
    record["definition"] = dict(DEFINITIONS, ignore_index=ignore_index)
    return record
