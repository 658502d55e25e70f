"""Detection ops with static shapes: boxes, RoIAlign, NMS and Mask R-CNN target assignment."""
from __future__ import annotations

from seg_jax.ops.boxes import (box_area, box_iou, clip_boxes, decode_boxes, encode_boxes,
                               generate_anchors)
from seg_jax.ops.nms import batched_nms, nms
from seg_jax.ops.roi_align import fpn_levels, multilevel_roi_align, roi_align, roi_align_indexed
from seg_jax.ops.sampling import (label_anchors, mask_targets, rpn_targets, sample_balanced,
                                  sample_balanced_indices, sample_rois)

__all__ = [
    "batched_nms", "box_area", "box_iou", "clip_boxes", "decode_boxes", "encode_boxes", "fpn_levels",
    "generate_anchors", "label_anchors", "mask_targets", "multilevel_roi_align", "nms", "roi_align",
    "roi_align_indexed", "rpn_targets", "sample_balanced", "sample_balanced_indices", "sample_rois",
]
