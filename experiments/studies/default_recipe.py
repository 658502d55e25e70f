"""python launch.py --study=experiments/studies/default_recipe.py --workdir=runs/studies/default_recipe --study_parallel=2

Why does the default run's seed move its mIoU so much (seed 0 far behind seeds 1-4, issue 11)? The default run over
seeds 0-4 against one change each: twice the peak learning rate, no random rescaling (`shapes` is evaluated at its
native scale), twice the steps. Seeds 0-3 of the default at a460371 gave val mIoU 0.396 / 0.623 / 0.610 / 0.642:
seed 0 confuses squares (IoU 0.11 vs 0.69-0.75), and every seed is still learning at step 1500 (seed 0 0.31 -> 0.40,
seed 1 0.45 -> 0.62 from step 750), so the seed seems to set how early the shapes are told apart; `steps_3000` tests
that. The other arms were not run yet (each run took about 8 min here with two at once). `:tiny` for tests.
"""
from __future__ import annotations

import ml_collections

from seg_jax.studies.spec import make_arms, new_study, overrides

ARGS = (None, "tiny")


def get_study(arg: str | None = None) -> ml_collections.ConfigDict:
    study = new_study("default_recipe", arg, args=ARGS)
    study.description = ("The default run's seed spread against one change each: twice the learning rate, no "
                         "rescaling, twice the steps.")
    study.base = "experiments/default.py" + (":tiny" if arg == "tiny" else "")
    study.arms = make_arms({
        "default": {},
        "lr_6e-3": {"optimizer.learning_rate": 6e-3},
        "scale_1": {"data.scale_range": (1.0, 1.0)},
        "steps_3000": {"train.steps": 3000},
        # added after the first three: no rescaling was the best of them, twice the rate helped seed 0 most
        "scale_1_lr_6e-3": {"data.scale_range": (1.0, 1.0), "optimizer.learning_rate": 6e-3},
    })
    study.common = overrides({})
    study.seeds = (0, 1) if arg == "tiny" else (0, 1, 2, 3, 4)
    study.metrics = ("val/mean_iou", "val/boundary_accuracy")
    study.per_class = ("val/iou",)
    study.baseline = "default"
    study.curve_metric = "val/mean_iou"
    return study
