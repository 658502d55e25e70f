"""Evaluators, built from the named entries of `config.evals` and run by the loop (big_vision style).

    config.evals = {"val": {"type": "semantic", "every": 750},
                    "val_crf": {"type": "crf", "every": 0, "gaussian_sxy": 3.0},
                    "val_instances": {"type": "instances", "options": {"method": "watershed"}}}

Each entry gives `<name>/<metric>` scalars (`val/mean_iou`, `val/iou/disc`, `val_crf/boundary_accuracy`, ...).
A new metric is one evaluator file (a subclass of `base.Evaluator`), one `EVALUATORS.register` line below, one
config entry and one test.
"""
from __future__ import annotations

from typing import Any

import ml_collections

from seg_jax.evaluators.base import EvalResult, Evaluator, safe_name
from seg_jax.evaluators.detection import DetectionEvaluator
from seg_jax.evaluators.instances import InstancesEvaluator
from seg_jax.evaluators.semantic import CRFEvaluator, SemanticEvaluator
from seg_jax.registry import Registry

EVALUATORS: Registry[type[Evaluator]] = Registry("evaluator type")
EVALUATORS.register("semantic")(SemanticEvaluator)
EVALUATORS.register("crf")(CRFEvaluator)
EVALUATORS.register("instances")(InstancesEvaluator)
EVALUATORS.register("detection")(DetectionEvaluator)


def build_evaluators(config: ml_collections.ConfigDict, *, task: Any, class_names: tuple[str, ...],
                     split: str | None = None) -> list[Evaluator]:
    """The evaluators of `config.evals` (the task's defaults when there are none), in config order.

    `split` replaces every entry's split (`--mode=eval --split=test`).

    Raises:
        KeyError: an entry without a registered `type` (the message lists the valid types).
        ValueError: an unknown option of an entry (the message names the entry and lists its options).
    """
    entries = config.get("evals", None)
    entries = entries.to_dict() if entries else task.default_evals()
    out = []
    for name, entry in entries.items():
        entry = dict(entry)
        if "type" not in entry:
            raise KeyError(f"config.evals.{name} has no 'type'; valid types: {', '.join(EVALUATORS.names())}")
        if split is not None:
            entry["split"] = split
        out.append(EVALUATORS.get(entry["type"])(name, entry, task=task, class_names=class_names,
                                                 data_cfg=config.data))
    return out


def scalar_names(evaluators: list[Evaluator]) -> list[str]:
    """Every scalar the evaluators will report, with their prefixes."""
    return [f"{ev.name}/{n}" for ev in evaluators for n in ev.scalar_names()]


__all__ = ["EVALUATORS", "CRFEvaluator", "DetectionEvaluator", "EvalResult", "Evaluator", "InstancesEvaluator",
           "SemanticEvaluator", "build_evaluators", "safe_name", "scalar_names"]
