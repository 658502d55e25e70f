"""Metrics: semantic (confusion-matrix based) and instance metrics."""
from __future__ import annotations

from seg_jax.metrics.instance import (
    INSTANCE_DEFINITIONS,
    InstanceEvaluator,
    aggregated_jaccard_index,
    coco_ap,
    coco_mask_ap,
    dsb_score,
    panoptic_quality,
)
from seg_jax.metrics.semantic import (
    DEFINITIONS,
    batched_confusion_matrix,
    confusion_matrix,
    dice_per_class,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
    summarize,
)

__all__ = [
    "INSTANCE_DEFINITIONS", "InstanceEvaluator", "aggregated_jaccard_index", "coco_ap", "coco_mask_ap", "dsb_score",
    "panoptic_quality",
    "DEFINITIONS", "batched_confusion_matrix", "confusion_matrix", "dice_per_class", "iou_per_class",
    "mean_iou", "pixel_accuracy", "summarize",
]
