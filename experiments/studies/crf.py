"""python launch.py --study=experiments/studies/crf.py --workdir=runs/studies/crf

Dense CRF (Krähenbühl & Koltun 2011; DeepLab's post-processing) on the default U-Net: every run is evaluated with
and without the CRF on the same checkpoint (`val` and `val_crf`), so `val_crf/...` against `val/...` within an arm
is the post-processing effect. CRF-as-RNN (Zheng et al. 2015) twice: `crf_rnn` trains through the layer from the
first step; `crf_rnn_finetune` continues each seed's `plain` run through it (`train.init_from`, a tenth of the rate,
as the paper fine-tuned a trained FCN-8s), against `finetune`, the same continuation without the layer (the control
for the extra steps). In the CRF-as-RNN arms `val` already scores the layer's output. 3 seeds. `:gpu` on
Oxford-IIIT Pet; `:tiny` for tests.

Took 27 min for the 12 runs alone on a fresh 2-core machine (2026-12-03, dataset build included): plain ≈ 2 min 15 s
a run and crf_rnn ≈ 3 min 30 s (1000 steps, commit cdc40fe), finetune ≈ 1 min 20 s and crf_rnn_finetune ≈ 1 min
45 s (500 steps). From scratch, the initial Potts weights (3, 10) make mean field return one-hot output on an
untrained network, and on the Dice default that arm did not learn (see docs/results.md).
"""
from __future__ import annotations

import ml_collections

from seg_jax.studies.spec import load_config, make_arms, new_study, overrides

ARGS = (None, "tiny", "gpu")


def get_study(arg: str | None = None) -> ml_collections.ConfigDict:
    study = new_study("crf", arg, args=ARGS)
    study.description = ("Dense-CRF post-processing on vs off on the same checkpoints (val_crf vs val); CRF-as-RNN "
                         "training from scratch (crf_rnn) vs none (plain); and fine-tuning each plain run through "
                         "the CRF layer (crf_rnn_finetune) vs without it (finetune), same steps and rate.")
    study.base = {None: "experiments/default.py:crf", "tiny": "experiments/default.py:crf,tiny",
                  "gpu": "experiments/pets.py"}[arg]
    crf_eval = {}
    if arg == "gpu":  # pets has no val_crf entry: add one with the default CRF parameters
        from experiments import common
        crf_eval = {"evals.val_crf": common.crf_eval()}
    # Fine-tuning as Zheng et al. did: each seed's `plain` run continued at a tenth of its learning rate, through the
    # CRF layer (crf_rnn_finetune) or without it (finetune, the control for the extra steps).
    finetune = {**crf_eval, "train.init_from": "{study_workdir}/plain/seed{seed}",
                "train.steps": {None: 500, "tiny": 2, "gpu": 5000}[arg],
                "optimizer.learning_rate": float(f"{load_config(study.base).optimizer.learning_rate / 10:.3g}")}
    study.arms = make_arms({"plain": crf_eval, "crf_rnn": {**crf_eval, "crf_layer.enabled": True},
                            "finetune": finetune, "crf_rnn_finetune": {**finetune, "crf_layer.enabled": True}})
    study.common = overrides({"train.steps": 1000, "evals.val.every": 0} if arg is None else {})
    study.seeds = (0, 1) if arg == "tiny" else (0, 1, 2)
    study.metrics = ("val/mean_iou", "val_crf/mean_iou", "val/boundary_accuracy", "val_crf/boundary_accuracy")
    study.contrasts = (("val_crf/mean_iou", "val/mean_iou"), ("val_crf/boundary_accuracy", "val/boundary_accuracy"))
    # The CRF-as-RNN paper's comparison: training through the layer against applying the CRF after training, on the
    # same fine-tuning steps (two arms, two scalars); and the layer's effect on the fine-tuned network itself.
    study.comparisons = tuple((f"crf_rnn_finetune:val/{m}", f"finetune:val{crf}/{m}")
                              for m in ("mean_iou", "boundary_accuracy") for crf in ("_crf", ""))
    study.per_class = ()
    study.baseline = "plain"
    study.curve_metric = "val/mean_iou"
    return study
