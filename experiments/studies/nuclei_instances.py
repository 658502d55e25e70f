"""python launch.py --study=experiments/studies/nuclei_instances.py --workdir=runs/studies/nuclei_instances

Touching instances from semantic masks (the U-Net paper's claim, Ronneberger et al. 2015): cross-entropy +
connected components vs the U-Net boundary weight map + components vs border-aware targets + marker watershed vs a
regressed distance map whose peaks seed the watershed, beside the classical baselines computed by the same
evaluator on the same images (Otsu + components, Otsu + distance-transform watershed; no learning, so their seeds
agree), on the built-in `nuclei`: DSB score, mask AP, PQ and AJI, 3 seeds, paired differences against CE +
components. `:gpu` runs the paper-sized U-Net (depth 4, width 64) for 20k steps; `:tiny` for tests. The first three
arms took 46 min for their 9 runs (1000 steps each) on the project's 2-core CPU while tests and benchmarks shared it
(load average 7–9; ≈ 5 min per run at 3.5 steps/s); the Otsu arms train one step.
"""
from __future__ import annotations

import ml_collections

from seg_jax.studies.spec import make_arms, new_study, overrides

ARGS = (None, "tiny", "gpu")


def get_study(arg: str | None = None) -> ml_collections.ConfigDict:
    size = ",tiny" if arg == "tiny" else ""
    study = new_study("nuclei_instances", arg, args=ARGS)
    study.description = ("CE + connected components vs U-Net weight map + components vs border targets + "
                         "watershed vs a regressed distance map + watershed, beside Otsu + components and Otsu + "
                         "distance watershed: which separates touching nuclei?")
    study.base = f"experiments/nuclei.py:ce_cc{size}"
    learned = ("ce_cc", "unet_weights_cc", "border_watershed", "distance_watershed")
    arms = {variant: {"base": f"experiments/nuclei.py:{variant}{size}"} for variant in learned}
    for variant in ("otsu_cc", "otsu_watershed"):  # the model is not used: one step, whatever `common` trains
        arms[variant] = {"base": f"experiments/nuclei.py:{variant}{size}", "train.steps": 1}
    study.arms = make_arms(arms)
    common = {"train.steps": 1000, "evals.val.every": 0, "evals.val_instances.every": 0}
    if arg == "gpu":  # the paper-sized U-Net, longer
        common = {"train.steps": 20_000, "model.base_width": 64, "model.depth": 4, "data.crop_size": (96, 96)}
    study.common = overrides(common if arg != "tiny" else {})
    study.seeds = (0, 1) if arg == "tiny" else (0, 1, 2)
    study.metrics = ("val_instances/dsb", "val_instances/mask_AP", "val_instances/mask_AP50", "val_instances/PQ",
                     "val_instances/AJI")
    study.per_class = ()
    study.baseline = "ce_cc"
    study.curve_metric = "val/mean_iou"
    return study
