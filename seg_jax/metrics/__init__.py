"""Metrics: semantic (confusion-matrix based), instance and detection metrics, as pure functions and
host-side accumulators (`InstanceMetrics`, `DetectionMetrics`) that the evaluators feed image by image."""
from __future__ import annotations

from seg_jax.metrics.detection import DETECTION_DEFINITIONS, DetectionMetrics, coco_box_ap, detections_to_instances
from seg_jax.metrics.instance import (
    INSTANCE_DEFINITIONS,
    InstanceMetrics,
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
    "DETECTION_DEFINITIONS", "DetectionMetrics", "coco_box_ap", "detections_to_instances",
    "INSTANCE_DEFINITIONS", "InstanceMetrics", "aggregated_jaccard_index", "coco_ap", "coco_mask_ap", "dsb_score",
    "panoptic_quality",
    "DEFINITIONS", "batched_confusion_matrix", "confusion_matrix", "dice_per_class", "iou_per_class",
    "mean_iou", "pixel_accuracy", "summarize",
]
