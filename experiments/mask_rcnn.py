"""python launch.py --config=experiments/mask_rcnn.py:shapes --workdir=runs/mask_rcnn_shapes

Mask R-CNN-style instance segmentation (ResNet + FPN, RPN, RoIAlign, box/class head, per-class mask
head) trained by the same loop, optimiser, checkpoints and datasets as FCN and U-Net (the `detection`
task). Ground-truth boxes, classes and masks come from each augmented example's instance ids.
  shapes   the built-in `shapes` scenes, 5 object classes (CPU-sized);
  nuclei   the built-in `nuclei` (CPU-sized; DSB score beside mask AP);
  coco     paper-sized network and schedule for GPUs (ResNet depths 2,2,2,2, 256-wide FPN, 512 RoIs),
           on `shapes` at 512 px or on your own instance-labelled folder via --config.data.*.
Append `,tiny` for the test-sized variant. `config.loss` weights the five loss terms.
"""
from __future__ import annotations

import ml_collections

from experiments import common

VARIANTS = ("shapes", "nuclei", "coco")
ARGS = VARIANTS + tuple(f"{v},tiny" for v in VARIANTS)

CPU_MODEL = {"name": "mask_rcnn"}  # the model's defaults are sized for a CPU
GPU_MODEL = {"name": "mask_rcnn", "backbone_depths": (2, 2, 2, 2), "backbone_widths": (64, 128, 256, 512),
             "fpn_width": 256, "anchor_sizes": ((32,), (64,), (128,), (256,)), "roi_samples": 512,
             "rpn_samples": 256, "rpn_pre_nms_top_n": 1000, "rpn_post_nms_top_n": 1000, "box_head_width": 1024,
             "mask_size": 28, "mask_head_convs": 4, "mask_head_width": 256, "max_detections": 100,
             "roi_canonical_size": 224}
TINY_MODEL = {"name": "mask_rcnn", "backbone_depths": (1, 1), "backbone_widths": (8, 16), "fpn_width": 16,
              "anchor_sizes": ((8,), (16,)), "rpn_samples": 64, "rpn_pre_nms_top_n": 64, "rpn_post_nms_top_n": 32,
              "roi_samples": 32, "box_head_width": 32, "mask_size": 14, "mask_head_convs": 1,
              "mask_head_width": 16, "max_detections": 8}


def get_config(arg: str | None = "shapes") -> ml_collections.ConfigDict:
    variant, tiny = common.split_arg(arg, variants=VARIANTS, default="shapes", what="mask_rcnn")
    config = common.base("nuclei" if variant == "nuclei" else "shapes")
    config.name = f"mask_rcnn_{variant}"
    config.data.crop_size = (96, 96)
    config.data.scale_range = (0.75, 1.25)
    config.data.max_instances = 16 if variant != "nuclei" else 48
    config.model = common.model(GPU_MODEL if variant == "coco" else CPU_MODEL)
    config.loss = ml_collections.ConfigDict(
        {"rpn_objectness": 1.0, "rpn_box": 1.0, "class": 1.0, "box": 1.0, "mask": 1.0})
    config.optimizer.learning_rate = 2e-3
    config.train.update(steps=2000, batch_size=8, checkpoint_every=500, best_metric="val/mask_AP")
    config.evals = ml_collections.ConfigDict(
        {"val": {"type": "detection", "every": 1000, "batch_size": 16, "num_pictures": 6, "mask_threshold": 0.5}})
    if variant == "coco":
        config.data.crop_size = (512, 512)
        config.data.scale_range = (0.5, 2.0)
        config.data.max_instances = 100
        config.optimizer = common.optimizer(
            {"name": "sgd", "learning_rate": 0.02, "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4,
             "grad_clip_norm": None})
        config.schedule = ml_collections.ConfigDict({"name": "cosine", "warmup_steps": 1000, "end_factor": 0.0,
                                                     "power": 0.9})
        config.train.update(steps=90_000, batch_size=16, checkpoint_every=2500)
        config.evals.val.every = 5000
    if tiny:
        common.shrink_for_tests(config)
        config.model = common.model(TINY_MODEL)
        config.data.max_instances = 8
    return config
