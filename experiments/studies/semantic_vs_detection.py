"""python launch.py --study=experiments/studies/semantic_vs_detection.py --workdir=runs/studies/semantic_vs_detection

Border-aware semantic targets + watershed vs Mask R-CNN on the same instance data (built-in `nuclei`) and the same
instance metrics (DSB, mask AP, PQ, AJI — the `instances` and `detection` evaluators report them under the same
names, here both as `val_instances/...`), 3 seeds, paired against the watershed. `:gpu` runs paper-sized Mask R-CNN
and U-Net; `:tiny` for tests. Took 59 min for the 6 runs (1500 steps each; Mask R-CNN ≈ 13–17 min a run at 1.2–1.9
steps/s) on the project's 2-core CPU while another study and tests shared it.
"""
from __future__ import annotations

import ml_collections

from seg_jax.studies.spec import make_arms, new_study, overrides

ARGS = (None, "tiny", "gpu")


def get_study(arg: str | None = None) -> ml_collections.ConfigDict:
    size = ",tiny" if arg == "tiny" else ""
    study = new_study("semantic_vs_detection", arg, args=ARGS)
    study.description = "Border targets + watershed (a semantic U-Net) vs Mask R-CNN on the same touching nuclei."
    study.base = f"experiments/nuclei.py:border_watershed{size}"
    detection_evals = {"val_instances": {"type": "detection", "every": 0, "batch_size": 8 if size else 16,
                                         "num_pictures": 2 if size else 6, "mask_threshold": 0.5}}
    mask_rcnn = {"base": f"experiments/mask_rcnn.py:{'coco' if arg == 'gpu' else 'nuclei'}{size}",
                 "evals": detection_evals, "train.best_metric": "val_instances/mask_AP"}
    if arg == "gpu":
        mask_rcnn["data.name"] = "nuclei"
    study.arms = make_arms({"border_watershed": {}, "mask_rcnn": mask_rcnn})
    steps = {None: {"train.steps": 1500}, "tiny": {}, "gpu": {"train.steps": 20_000}}[arg]
    study.common = overrides(steps)
    study.seeds = (0, 1) if arg == "tiny" else (0, 1, 2)
    study.metrics = ("val_instances/dsb", "val_instances/mask_AP", "val_instances/mask_AP50", "val_instances/PQ",
                     "val_instances/AJI")
    study.per_class = ()
    study.baseline = "border_watershed"
    study.curve_metric = "train/loss"
    return study
