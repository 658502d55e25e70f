"""python launch.py --study=experiments/studies/imbalance.py --workdir=runs/studies/imbalance

Class imbalance: plain cross-entropy vs inverse- and median-frequency weighted cross-entropy vs Dice vs CE + Dice,
on `shapes` (background > 80 % of pixels, the thin bar < 1 %): the IoU of the rare classes (bar, ring) and mIoU,
3 seeds, paired differences against plain CE. `:gpu` runs the arms on Cityscapes (U-Net); `:tiny` for tests.
Each run trains the default run's 1500 steps (the earlier 750-step version left plain CE at mIoU 0.25, far from
converged, so the arms were compared before any of them had learnt the rare classes). The 15 runs took 52 min on the
project's 2-core CPU while the test suite shared it for about 20 of them (one run alone: about 3 min).
"""
from __future__ import annotations

import ml_collections

from seg_jax.studies.spec import make_arms, new_study, overrides

ARGS = (None, "tiny", "gpu")


def get_study(arg: str | None = None) -> ml_collections.ConfigDict:
    study = new_study("imbalance", arg, args=ARGS)
    study.description = ("Cross-entropy vs class-weighted cross-entropy (inverse and median frequency) vs Dice vs "
                         "CE + Dice: does reweighting or Dice raise the IoU of the rare classes and the mIoU?")
    study.base = {None: "experiments/imbalance.py:ce", "tiny": "experiments/imbalance.py:ce,tiny",
                  "gpu": "experiments/cityscapes.py:unet"}[arg]
    ce = {"loss": {"cross_entropy": 1.0}, "class_weights": None}
    study.arms = make_arms({
        "ce": ce,
        "inverse_frequency": {**ce, "class_weights": "inverse_frequency"},
        "median_frequency": {**ce, "class_weights": "median_frequency"},
        "dice": {"loss": {"dice": 1.0}, "class_weights": None},
        "ce_dice": {"loss": {"cross_entropy": 1.0, "dice": 1.0}, "class_weights": None},
    })
    study.common = overrides({"evals.val.every": 0} if arg is None else {})
    study.seeds = (0, 1) if arg == "tiny" else (0, 1, 2)
    rare = () if arg == "gpu" else ("val/iou/bar", "val/iou/ring")
    study.metrics = ("val/mean_iou", *rare, "val/boundary_accuracy")
    study.per_class = ("val/iou",)
    study.baseline = "ce"
    study.curve_metric = "val/mean_iou"
    return study
