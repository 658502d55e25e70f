"""Tasks: what is trained and predicted, chosen by name (`config.task`, else the model's registry entry).

A task owns, for one kind of model:
  * its loss, built from `config.loss` (each task checks its own term names and options);
  * the per-device loss `task.loss(variables, batch, rng, *, axis_name) -> (total, terms, updates, counts)`,
    which the one train step of `seg_jax.train.steps` differentiates;
  * `task.predict(variables, images)`, what evaluators and prediction run (a semantic task: the class logits;
    `predict_outputs` adds its distance map when it has one);
  * `output_channels(config, num_classes=...)`, the channels the model is built with;
  * `train_keys` (the batch keys its loss reads), `train_example_map()` (a per-example step the input pipeline
    runs after augmentation, or None) and `default_evals(...)` (evaluator entries for configs without `evals`).

Two tasks: `semantic` (FCN, U-Net, any pixel classifier) and `detection` (Mask R-CNN).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import ml_collections
import numpy as np

from seg_jax import models
from seg_jax.registry import Registry
from seg_jax.tasks.detection import DetectionTask
from seg_jax.tasks.semantic import SemanticTask

TASKS: Registry[Any] = Registry("task")
TASKS.register("semantic")(SemanticTask)
TASKS.register("detection")(DetectionTask)


def task_name(config: ml_collections.ConfigDict) -> str:
    """`config.task` when set, else the `task` attribute of the model's registry entry ("semantic" by default)."""
    name = config.get("task", None)
    if name:
        TASKS.get(name)  # an unknown name lists the valid ones
        return name
    factory = models.MODELS.get(config.model.name)
    return getattr(getattr(factory, "func", factory), "task", "semantic")


def output_channels(config: ml_collections.ConfigDict, *, num_classes: int) -> int:
    """The output channels the model of `config` is built with: `num_classes`, plus one for a semantic task whose
    loss regresses the distance map (`SemanticTask.output_channels`)."""
    return TASKS.get(task_name(config)).output_channels(config, num_classes=num_classes)


def create_task(config: ml_collections.ConfigDict, *, model: nn.Module, num_classes: int,
                class_weights: np.ndarray | None = None):
    """The task of `config` around `model` (the module applied in the pmapped step).

    Raises:
        KeyError / ValueError: an unknown task, loss term or loss option (the message lists the valid ones).
    """
    return TASKS.get(task_name(config)).from_config(config, model=model, num_classes=num_classes,
                                                    class_weights=class_weights)


__all__ = ["TASKS", "DetectionTask", "SemanticTask", "create_task", "output_channels", "task_name"]
