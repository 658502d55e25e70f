"""Builds everything an experiment config names: the task (model and loss), optimiser and schedule.

Building needs no data on disk, so every config under `experiments/` is built by a test.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import ml_collections
import numpy as np
import optax

from seg_jax import models, tasks
from seg_jax.models import backbones
from seg_jax.train import optim
from seg_jax.train.steps import AXIS


# config.model fields the trainer reads (how parameters start, which ones train), not options of the model.
TRAINING_FIELDS = ("pretrained", "pretrained_normalization", "freeze_stages")


@dataclasses.dataclass(frozen=True)
class BackboneSite:
    """Where a model's backbone is: `create_backbone(name, **options)`, its variables at `path` in every
    collection (e.g. params["backbone"])."""
    name: str
    options: dict
    path: tuple[str, ...]

    def module(self) -> nn.Module:
        return backbones.create_backbone(self.name, **self.options)


@dataclasses.dataclass(frozen=True)
class Experiment:
    init_model: nn.Module    # BatchNorm without a device axis, for `init` outside pmap
    task: Any                # a seg_jax.tasks task around the model applied in the pmapped step
    learning_rate_fn: optax.Schedule
    tx: optax.GradientTransformation
    schedule_steps: int      # the steps the learning-rate schedule spans
    backbone: BackboneSite | None = None  # None: the model has no backbone (U-Net)


def models_with_backbone() -> list[str]:
    """Registered models built on a `seg_jax.models.backbones` module (their class has `backbone_config`)."""
    def cls(name):
        factory = models.MODELS.get(name)
        return factory.func if isinstance(factory, functools.partial) else factory
    return [name for name in models.MODELS.names() if hasattr(cls(name), "backbone_config")]


def no_backbone_message(config: ml_collections.ConfigDict, field: str) -> str:
    return (f"model {config.model.name!r} has no backbone for config.{field}; models with one: "
            f"{', '.join(models_with_backbone())}")


def model_kwargs(config: ml_collections.ConfigDict) -> dict:
    """The model's options from `config.model`: all fields but `name` and `TRAINING_FIELDS`.

    Raises:
        ValueError: `model.freeze_bn` set for a model without a backbone.
    """
    kwargs = {k: v for k, v in config.model.to_dict().items() if k != "name" and k not in TRAINING_FIELDS}
    if config.model.name not in models_with_backbone():  # freeze_bn: a field of every config.model, an option of few
        if kwargs.pop("freeze_bn", False):
            raise ValueError(no_backbone_message(config, "model.freeze_bn"))
    return kwargs


def _models(config: ml_collections.ConfigDict, *,
            num_classes: int) -> tuple[nn.Module, nn.Module, BackboneSite | None]:
    """(init model, apply model, backbone): the same network, the second with BatchNorm synchronised over devices;
    where the backbone is (None without one)."""
    kwargs = model_kwargs(config)
    init_model = models.create_model(config.model.name, num_classes=num_classes, **kwargs)
    apply_model = models.create_model(config.model.name, num_classes=num_classes, norm_axis_name=AXIS, **kwargs)
    site = None
    if hasattr(init_model, "backbone_config"):  # FCN, Mask R-CNN: its submodule "backbone"
        site = BackboneSite(*init_model.backbone_config(), path=("backbone",))
    crf_cfg = config.get("crf_layer", None)
    if crf_cfg is not None and crf_cfg.enabled:  # CRF-as-RNN: a trainable dense CRF on the logits
        from seg_jax.models.crf_head import WithCRF
        from seg_jax.postprocess.crf import CRFLayer
        crf = CRFLayer(**{k: v for k, v in crf_cfg.to_dict().items() if k != "enabled"})
        wrap = lambda m: WithCRF(backbone=m, crf=crf, mean=tuple(config.data.mean), std=tuple(config.data.std))
        init_model, apply_model = wrap(init_model), wrap(apply_model)
        if site is not None:  # WithCRF holds the model as its submodule "backbone"
            site = dataclasses.replace(site, path=("backbone", *site.path))
    return init_model, apply_model, site


def schedule_steps(config: ml_collections.ConfigDict) -> int:
    """The steps the schedule spans for a new run: `train.schedule_steps` when set, else `train.steps`."""
    return int(config.train.get("schedule_steps", None) or config.train.steps)


def build_experiment(config: ml_collections.ConfigDict, *, num_classes: int,
                     class_weights: np.ndarray | None = None) -> Experiment:
    """Task (model + loss), schedule and optimiser from `config`; unknown names raise listing valid ones."""
    channels = tasks.output_channels(config, num_classes=num_classes)
    init_model, apply_model, site = _models(config, num_classes=channels)
    task = tasks.create_task(config, model=apply_model, num_classes=num_classes, class_weights=class_weights)
    return with_schedule(Experiment(init_model=init_model, task=task, learning_rate_fn=None, tx=None,
                                    schedule_steps=0, backbone=site), config, total_steps=schedule_steps(config))


def frozen_prefix_fn(config: ml_collections.ConfigDict,
                     site: BackboneSite | None) -> Callable[[Any], list[str]] | None:
    """params → the path prefixes that do not train: `optimizer.frozen`, and the backbone modules of
    `model.freeze_stages` / `model.freeze_bn` (`backbones.frozen_prefixes`); None when nothing is frozen.

    Raises:
        ValueError: freeze_stages / freeze_bn for a model without a backbone.
    """
    listed = [str(p) for p in (config.optimizer.get("frozen", None) or ())]
    freeze_stages, freeze_bn = int(config.model.get("freeze_stages", 0) or 0), bool(config.model.get("freeze_bn"))
    if not (listed or freeze_stages or freeze_bn):
        return None
    if (freeze_stages or freeze_bn) and site is None:
        raise ValueError(no_backbone_message(config, "model.freeze_stages"))
    backbone = site.module() if site is not None else None

    def prefixes(params):
        stages = [] if backbone is None else backbones.frozen_prefixes(
            params, backbone=backbone, path=site.path, freeze_stages=freeze_stages, freeze_bn=freeze_bn)
        return [*listed, *stages]
    return prefixes


def with_schedule(exp: Experiment, config: ml_collections.ConfigDict, *, total_steps: int) -> Experiment:
    """`exp` with its schedule and optimiser spanning `total_steps` (a resumed run keeps its recorded span)."""
    schedule = optim.make_schedule(config.schedule, base_lr=config.optimizer.learning_rate, total_steps=total_steps)
    tx = optim.make_optimizer(config.optimizer, schedule)
    frozen = frozen_prefix_fn(config, exp.backbone)
    if frozen is not None:
        tx = optim.with_frozen(tx, frozen)
    return dataclasses.replace(exp, learning_rate_fn=schedule, tx=tx, schedule_steps=int(total_steps))
