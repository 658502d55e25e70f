"""python launch.py --study=experiments/studies/nuclei_instances.py --workdir=runs/studies/nuclei_instances

Touching instances from semantic masks (the U-Net paper's claim, Ronneberger et al. 2015): cross-entropy +
connected components vs the U-Net boundary weight map + components vs border-aware targets + marker watershed vs a
regressed distance map whose peaks seed the watershed, beside the classical baselines computed by the same
evaluator on the same images (Otsu + components, Otsu + distance-transform watershed; no learning, so their seeds
agree), on the built-in `nuclei` (generator 2.0.0, microscopy augmentations: `experiments/nuclei.py`). DSB score,
mask AP, PQ and AJI, 3 seeds, paired differences against CE + components.

Domain shift: every arm is also scored zero-shot on the held-out `shifted` split (generator 2.0.0 with other
parameters: `seg_jax.data.sources.nuclei_v2.SHIFTED`), and `border_watershed_v1` trains border + watershed with the
recipe before issue 13 (generator 1.0.0, no microscopy augmentation; `nuclei.OLD_RECIPE`) — scored on the same
version-2.0.0 validation and shifted images as the others (`evals.*.data_version`).

Its 21 runs (15 trained for 1000 steps, 6 Otsu runs of one step) took 101 min on the project's 2-core CPU
(2026-12-02), the first 50 of them beside another study (≈ 1.8 steps/s shared, ≈ 3.5 alone).

`:gpu` runs the paper-sized U-Net (depth 4, width 64) for 20k steps; `:tiny` for tests.
"""
from __future__ import annotations

import ml_collections

from experiments import nuclei
from seg_jax.studies.spec import make_arms, new_study, overrides

ARGS = (None, "tiny", "gpu")
LEARNED = ("ce_cc", "unet_weights_cc", "border_watershed", "distance_watershed")
CLASSICAL = ("otsu_cc", "otsu_watershed")


def _evals(variant: str, size: str, *, data_version: str | None = None) -> dict:
    """The variant's own `val` and `val_instances` entries, plus `shifted`: `val_instances` on the held-out split of
    generator 2.0.0. `data_version` pins the version `val` / `val_instances` read (for arms trained on another)."""
    entries = nuclei.get_config(variant + size).evals.to_dict()
    entries["shifted"] = {**entries["val_instances"], "split": "shifted", "data_version": "2.0.0",
                          "num_pictures": 0}
    for name, entry in entries.items():
        entry["every"] = 0  # at the end of training only
        if data_version is not None and name != "shifted":
            entry["data_version"] = data_version
    return entries


def get_study(arg: str | None = None) -> ml_collections.ConfigDict:
    size = ",tiny" if arg == "tiny" else ""
    study = new_study("nuclei_instances", arg, args=ARGS)
    study.description = ("CE + connected components vs U-Net weight map + components vs border targets + "
                         "watershed vs a regressed distance map + watershed, beside Otsu + components and Otsu + "
                         "distance watershed, in domain and zero-shot on a shifted generator: which separates "
                         "touching nuclei?")
    study.base = f"experiments/nuclei.py:ce_cc{size}"
    arms = {variant: {"base": f"experiments/nuclei.py:{variant}{size}", "evals": _evals(variant, size)}
            for variant in LEARNED}
    arms["border_watershed_v1"] = {"base": f"experiments/nuclei.py:border_watershed{size}", **nuclei.OLD_RECIPE,
                                   "evals": _evals("border_watershed", size, data_version="2.0.0")}
    for variant in CLASSICAL:  # the model is not used: one step, whatever `common` trains
        arms[variant] = {"base": f"experiments/nuclei.py:{variant}{size}", "train.steps": 1,
                         "evals": _evals(variant, size)}
    study.arms = make_arms(arms)
    common = {"train.steps": 1000}
    if arg == "gpu":  # the paper-sized U-Net, longer
        common = {"train.steps": 20_000, "model.base_width": 64, "model.depth": 4, "data.crop_size": (96, 96)}
    study.common = overrides(common if arg != "tiny" else {})
    study.seeds = (0, 1) if arg == "tiny" else (0, 1, 2)
    study.metrics = ("val_instances/dsb", "val_instances/mask_AP", "val_instances/mask_AP50", "val_instances/PQ",
                     "val_instances/AJI", "shifted/dsb", "shifted/mask_AP50", "shifted/PQ")
    study.per_class = ()
    study.baseline = "ce_cc"
    study.curve_metric = "val/mean_iou"
    return study
