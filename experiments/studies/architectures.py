"""python launch.py --study=experiments/studies/architectures.py --workdir=runs/studies/architectures

FCN-8s vs U-Net vs Mask R-CNN on the built-in `shapes`, on the metrics they share: semantic (mIoU and pixel
accuracy — Mask R-CNN's from the class map its masks paint) and instance (DSB, mask AP, PQ — the semantic models'
from per-class connected components of their predictions), 3 seeds, paired against U-Net. `:gpu` runs the paper-sized
networks (experiments/cityscapes.py's, experiments/mask_rcnn.py:coco) on the same data; `:tiny` for tests.
On the project's 2-core CPU (1500 steps each) an FCN-8s run took ≈ 20 min and a Mask R-CNN run ≈ 22 min at
≈ 1.8–2.3 steps/s including evaluation (2026-12-02, partly beside another study).
"""
from __future__ import annotations

import ml_collections

from seg_jax.studies.spec import make_arms, new_study, overrides

ARGS = (None, "tiny", "gpu")


def get_study(arg: str | None = None) -> ml_collections.ConfigDict:
    tiny = arg == "tiny"
    size = ",tiny" if tiny else ""
    evals = {"batch_size": 8 if tiny else 32, "num_pictures": 2 if tiny else 6, "every": 0}
    instances = {"type": "instances", "per_class": True,
                 "options": {"method": "connected_components", "foreground_threshold": 0.5, "min_size": 4}, **evals}
    semantic = {"evals": {"val": {"type": "semantic", "boundary_width": 3, **evals}, "val_instances": instances}}
    study = new_study("architectures", arg, args=ARGS)
    study.description = "FCN-8s vs U-Net vs Mask R-CNN on shapes, on the semantic and instance metrics they share."
    study.base = f"experiments/default.py{':tiny' if tiny else ''}"
    paper = {}
    if arg == "gpu":  # the paper-sized networks of the GPU configs, on the same data
        from experiments import cityscapes
        paper = {name: {"model": dict(cityscapes.MODELS[name])} for name in ("unet", "fcn8s")}
    detection = {"type": "detection", "mask_threshold": 0.5, **evals}
    study.arms = make_arms({
        "unet": {**semantic, **paper.get("unet", {})},
        "fcn8s": {**semantic, "base": f"experiments/fcn.py:fcn8s{size}", **paper.get("fcn8s", {})},
        # two entries of one evaluator: the semantic and the instance scalars under the other arms' names
        "mask_rcnn": {"base": f"experiments/mask_rcnn.py:{'coco' if arg == 'gpu' else 'shapes'}{size}",
                      "evals": {"val": detection, "val_instances": detection}},
    })
    study.common = overrides({} if tiny else {"train.steps": 1500})
    study.seeds = (0, 1) if tiny else (0, 1, 2)
    study.metrics = ("val/mean_iou", "val/pixel_accuracy", "val_instances/dsb", "val_instances/mask_AP",
                     "val_instances/PQ")
    study.per_class = ("val/iou",)
    study.baseline = "unet"
    study.curve_metric = "train/loss"
    return study
