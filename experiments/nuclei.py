"""python launch.py --config=experiments/nuclei.py:border_watershed --workdir=runs/nuclei_border_watershed

Instances from semantic masks on the built-in `nuclei` dataset (touching nuclei, DSB-2018 style):
  ce_cc             plain cross-entropy, instances by connected components (the baseline);
  unet_weights_cc   cross-entropy weighted by the U-Net paper's boundary weight map (w0=10, σ=5 px);
  border_watershed  border-aware 3-class targets (background / interior / border), marker-controlled
                    watershed seeded by interior minus border.
Evaluation reports DSB score, COCO mask AP, PQ and AJI (`val_instances`) beside mIoU (`val`).
Append `,tiny` for tests.
"""
from __future__ import annotations

import ml_collections

from experiments import common

VARIANTS = ("ce_cc", "unet_weights_cc", "border_watershed")
ARGS = VARIANTS + tuple(f"{v},tiny" for v in VARIANTS)


def get_config(arg: str | None = "border_watershed") -> ml_collections.ConfigDict:
    variant, tiny = common.split_arg(arg, variants=VARIANTS, default="border_watershed", what="nuclei")
    config = common.base("nuclei")
    config.name = f"nuclei_{variant}"
    config.data.crop_size = (64, 64)
    config.model = common.model({"name": "unet", "depth": 3, "base_width": 16, "norm": "batch"})
    options = {"method": "connected_components", "foreground_threshold": 0.5, "min_size": 8}
    if variant == "unet_weights_cc":
        config.data.weight_map = "unet"
        config.data.weight_map_w0 = 10.0
        config.data.weight_map_sigma = 5.0
    elif variant == "border_watershed":
        config.data.targets = "border"
        config.data.border_width = 2
        options = {"method": "watershed", "border_index": 2, "markers": "interior", "elevation": "border",
                   "marker_threshold": 0.5, "foreground_threshold": 0.5, "min_size": 8}
    config.evals.val_instances = {"type": "instances", "every": 750, "batch_size": 32, "num_pictures": 6,
                                  "per_class": False, "options": options}
    if tiny:
        common.shrink_for_tests(config)
        config.model.update(depth=2, base_width=4)
    return config
