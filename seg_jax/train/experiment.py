"""Builds everything an experiment config names: the task (model and loss), optimiser and schedule.

Building needs no data on disk, so every config under `experiments/` is built by a test.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import ml_collections
import numpy as np
import optax

from seg_jax import models, tasks
from seg_jax.train import optim
from seg_jax.train.steps import AXIS


@dataclasses.dataclass(frozen=True)
class Experiment:
    init_model: nn.Module    # BatchNorm without a device axis, for `init` outside pmap
    task: Any                # a seg_jax.tasks task around the model applied in the pmapped step
    learning_rate_fn: optax.Schedule
    tx: optax.GradientTransformation
    schedule_steps: int      # the steps the learning-rate schedule spans


def model_kwargs(config: ml_collections.ConfigDict) -> dict:
    kwargs = config.model.to_dict()
    kwargs.pop("name")
    return kwargs


def _models(config: ml_collections.ConfigDict, *, num_classes: int) -> tuple[nn.Module, nn.Module]:
    """(init model, apply model): the same network, the second with BatchNorm synchronised over devices."""
    kwargs = model_kwargs(config)
    init_model = models.create_model(config.model.name, num_classes=num_classes, **kwargs)
    apply_model = models.create_model(config.model.name, num_classes=num_classes, norm_axis_name=AXIS, **kwargs)
    crf_cfg = config.get("crf_layer", None)
    if crf_cfg is not None and crf_cfg.enabled:  # CRF-as-RNN: a trainable dense CRF on the logits
        from seg_jax.models.crf_head import WithCRF
        from seg_jax.postprocess.crf import CRFLayer
        crf = CRFLayer(**{k: v for k, v in crf_cfg.to_dict().items() if k != "enabled"})
        wrap = lambda m: WithCRF(backbone=m, crf=crf, mean=tuple(config.data.mean), std=tuple(config.data.std))
        init_model, apply_model = wrap(init_model), wrap(apply_model)
    return init_model, apply_model


def schedule_steps(config: ml_collections.ConfigDict) -> int:
    """The steps the schedule spans for a new run: `train.schedule_steps` when set, else `train.steps`."""
    return int(config.train.get("schedule_steps", None) or config.train.steps)


def build_experiment(config: ml_collections.ConfigDict, *, num_classes: int,
                     class_weights: np.ndarray | None = None) -> Experiment:
    """Task (model + loss), schedule and optimiser from `config`; unknown names raise listing valid ones."""
    init_model, apply_model = _models(config, num_classes=num_classes)
    task = tasks.create_task(config, model=apply_model, num_classes=num_classes, class_weights=class_weights)
    return with_schedule(Experiment(init_model=init_model, task=task, learning_rate_fn=None, tx=None,
                                    schedule_steps=0), config, total_steps=schedule_steps(config))


def with_schedule(exp: Experiment, config: ml_collections.ConfigDict, *, total_steps: int) -> Experiment:
    """`exp` with its schedule and optimiser spanning `total_steps` (a resumed run keeps its recorded span)."""
    schedule = optim.make_schedule(config.schedule, base_lr=config.optimizer.learning_rate, total_steps=total_steps)
    return dataclasses.replace(exp, learning_rate_fn=schedule, tx=optim.make_optimizer(config.optimizer, schedule),
                               schedule_steps=int(total_steps))
