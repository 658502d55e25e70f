"""python launch.py --study=experiments/studies/default_steps.py --workdir=runs/studies/default_steps

Is the default run's seed spread (issue 11: val mIoU 0.58-0.81 over seeds 0-4 in `default_seeds`) a matter of
training too short? The default experiment as it is (1500 steps) against the same recipe trained twice as long, with
the learning-rate schedule spanning the longer run. If the spread is under-training, it shrinks at 3000 steps; if it
stays, the seed moves something more training does not fix. 3 seeds (a 3000-step run takes twice the default's
3 min here); `:tiny` for tests.
"""
from __future__ import annotations

import ml_collections

from seg_jax.studies.spec import make_arms, new_study, overrides

ARGS = (None, "tiny")


def get_study(arg: str | None = None) -> ml_collections.ConfigDict:
    study = new_study("default_steps", arg, args=ARGS)
    study.description = ("The default run (1500 steps) against the same recipe at 3000 steps: does the seed spread "
                         "shrink when the runs train longer?")
    study.base = "experiments/default.py" + (":tiny" if arg == "tiny" else "")
    study.arms = make_arms({"default": {}, "steps_3000": {"train.steps": 8 if arg == "tiny" else 3000}})
    study.common = overrides({})  # the default scores every 750 steps: the long arm's curve has four points
    study.seeds = (0, 1) if arg == "tiny" else (0, 1, 2)
    study.metrics = ("val/mean_iou", "val/per_image_mean_iou", "val/boundary_accuracy")
    study.per_class = ("val/iou",)
    study.baseline = "default"
    study.curve_metric = "val/mean_iou"
    return study
