"""python launch.py --study=experiments/studies/default_seeds.py --workdir=runs/studies/default_seeds

The default experiment (`python launch.py`: U-Net, soft Dice, built-in `shapes`) over seeds 0–4: the
README's default-run numbers are this study's mean ± 95 % CI, so they do not depend on one lucky or unlucky seed.
One arm, so no paired differences; the per-class table shows which classes the seed moves. `:tiny` for tests.
Took 16.7 min for the 5 runs, one at a time, on the project's 2-core CPU on 2026-12-04 (189-223 s each).
"""
from __future__ import annotations

import ml_collections

from seg_jax.studies.spec import make_arms, new_study, overrides

ARGS = (None, "tiny")


def get_study(arg: str | None = None) -> ml_collections.ConfigDict:
    study = new_study("default_seeds", arg, args=ARGS)
    study.description = "The default run over five seeds: how much does the seed alone move its numbers?"
    study.base = "experiments/default.py" + (":tiny" if arg == "tiny" else "")
    study.arms = make_arms({"default": {}})
    study.common = overrides({})
    study.seeds = (0, 1) if arg == "tiny" else (0, 1, 2, 3, 4)
    study.metrics = ("val/mean_iou", "val/per_image_mean_iou", "val/pixel_accuracy", "val/boundary_accuracy")
    study.per_class = ("val/iou",)
    study.baseline = "default"
    study.curve_metric = "val/mean_iou"
    return study
