"""python launch.py --study=experiments/studies/crf.py --workdir=runs/studies/crf

Dense CRF (Krähenbühl & Koltun 2011; DeepLab's post-processing) on the default U-Net: every run is evaluated with
and without the CRF on the same checkpoint (`val` and `val_crf`), so `val_crf/...` against `val/...` within an arm
is the post-processing effect; the arm `crf_rnn` trains through a CRF-as-RNN layer (Zheng et al. 2015) and is
compared with plain training (`plain`). 3 seeds. `:gpu` on Oxford-IIIT Pet; `:tiny` for tests. Took 17 min 40 s
for the 6 runs (1000 steps each; plain ≈ 2 min 15 s a run, crf_rnn ≈ 3 min 30 s) alone on a fresh 2-core machine,
dataset build included (2026-12-03, commit cdc40fe).

Unlike Zheng et al., who fine-tuned a trained FCN-8s through the layer, `crf_rnn` trains through it from the first
step: with the initial Potts weights (3, 10) mean field returns one-hot output on an untrained network, and on the
Dice default that run did not learn (see docs/results.md).
"""
from __future__ import annotations

import ml_collections

from seg_jax.studies.spec import make_arms, new_study, overrides

ARGS = (None, "tiny", "gpu")


def get_study(arg: str | None = None) -> ml_collections.ConfigDict:
    study = new_study("crf", arg, args=ARGS)
    study.description = ("Dense-CRF post-processing on vs off on the same checkpoints (val_crf vs val), and "
                         "CRF-as-RNN training (crf_rnn) vs none (plain).")
    study.base = {None: "experiments/default.py:crf", "tiny": "experiments/default.py:crf,tiny",
                  "gpu": "experiments/pets.py"}[arg]
    crf_eval = {}
    if arg == "gpu":  # pets has no val_crf entry: add one with the default CRF parameters
        from experiments import common
        crf_eval = {"evals.val_crf": common.crf_eval()}
    study.arms = make_arms({"plain": crf_eval, "crf_rnn": {**crf_eval, "crf_layer.enabled": True}})
    study.common = overrides({"train.steps": 1000, "evals.val.every": 0} if arg is None else {})
    study.seeds = (0, 1) if arg == "tiny" else (0, 1, 2)
    study.metrics = ("val/mean_iou", "val_crf/mean_iou", "val/boundary_accuracy", "val_crf/boundary_accuracy")
    study.contrasts = (("val_crf/mean_iou", "val/mean_iou"), ("val_crf/boundary_accuracy", "val/boundary_accuracy"))
    study.per_class = ()
    study.baseline = "plain"
    study.curve_metric = "val/mean_iou"
    return study
