"""Builds everything an experiment config names: model, loss, optimiser, schedule.

Building needs no data on disk, so every config under `experiments/` is built by a test.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn
import ml_collections
import numpy as np
import optax

from seg_jax import losses, models
from seg_jax.train import optim
from seg_jax.train.steps import AXIS


@dataclasses.dataclass(frozen=True)
class Experiment:
    init_model: nn.Module    # BatchNorm without a device axis, for `init` outside pmap
    apply_model: nn.Module   # BatchNorm synchronised over the pmapped "batch" axis
    loss_fn: Callable | None  # semantic models: the combined pixel loss; detection: None
    learning_rate_fn: optax.Schedule
    tx: optax.GradientTransformation
    task: str = "semantic"   # or "detection" (Mask R-CNN: config.loss weights its five terms)


def model_kwargs(config: ml_collections.ConfigDict) -> dict:
    kwargs = config.model.to_dict()
    kwargs.pop("name")
    return kwargs


def build_experiment(config: ml_collections.ConfigDict, *, num_classes: int) -> Experiment:
    """Model, loss, schedule and optimiser from `config`; unknown names raise listing valid ones."""
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
    schedule = optim.make_schedule(config.schedule, base_lr=config.optimizer.learning_rate,
                                   total_steps=config.train.steps)
    task = getattr(models.MODELS.get(config.model.name), "task", "semantic")
    if task == "detection":
        from seg_jax.models.mask_rcnn import LOSS_TERMS
        unknown = sorted(set(config.loss) - set(LOSS_TERMS))
        if unknown:
            raise KeyError(f"unknown Mask R-CNN loss term(s) {unknown} in config.loss; valid names: "
                           f"{', '.join(LOSS_TERMS)}")
    return Experiment(
        init_model=init_model,
        apply_model=apply_model,
        loss_fn=losses.make_loss_fn(config.loss.to_dict()) if task == "semantic" else None,
        learning_rate_fn=schedule,
        tx=optim.make_optimizer(config.optimizer, schedule),
        task=task,
    )


def class_weights_for(config: ml_collections.ConfigDict) -> np.ndarray | None:
    """Class weights from the training split's label statistics, or None (`config.class_weights`)."""
    method = config.get("class_weights", None)
    if not method:
        return None
    from seg_jax import data  # deferred: reading statistics touches the dataset on disk
    counts = data.class_pixel_counts(config.data, split=config.data.train_split)
    return data.class_weights_from_counts(counts, method=method)
