"""python launch.py --study=experiments/studies/fcn_skips.py --workdir=runs/studies/fcn_skips

Do skip connections help? FCN-32s vs FCN-16s vs FCN-8s (Long et al. 2015, table 2: 59.4 / 62.4 / 62.7 mIoU on
PASCAL VOC 2011 val; the skips mostly sharpen boundaries) on the built-in `shapes`: mIoU and boundary accuracy,
3 seeds, paired differences against FCN-32s. `:gpu` runs the same arms at full VGG-16 width on Oxford-IIIT Pet;
`:tiny` is the test-sized study. Took 31 min 24 s for the 9 runs (1000 steps each) on the project's 2-core CPU,
part of it shared with a test run (≈ 3.5 min per run).
"""
from __future__ import annotations

import ml_collections

from seg_jax.studies.spec import make_arms, new_study, overrides

ARGS = (None, "tiny", "gpu")


def get_study(arg: str | None = None) -> ml_collections.ConfigDict:
    study = new_study("fcn_skips", arg, args=ARGS)
    study.description = ("FCN-32s vs FCN-16s vs FCN-8s: do the skip connections improve mIoU and boundary "
                         "accuracy?")
    base = {None: "experiments/fcn.py:fcn8s", "tiny": "experiments/fcn.py:fcn8s,tiny",
            "gpu": "experiments/pets.py"}[arg]
    study.base = base
    model = {"width_multiplier": 1.0, "fc6_kernel": 7, "norm": "batch"} if arg == "gpu" else None
    study.arms = make_arms({
        name: {"model": {"name": name, **model}} if model else {"model.name": name}
        for name in ("fcn32s", "fcn16s", "fcn8s")})
    study.common = overrides({"train.steps": 1000} if arg is None else {})
    study.seeds = (0, 1) if arg == "tiny" else (0, 1, 2)
    study.metrics = ("val/mean_iou", "val/boundary_accuracy", "val/pixel_accuracy")
    study.per_class = ("val/iou",)
    study.baseline = "fcn32s"
    study.curve_metric = "val/mean_iou"
    return study
