"""Helpers shared by the experiment configs (not an experiment itself: it has no `get_config`).

Building a config imports neither TFDS nor grain: only `ml_collections` and `seg_jax.data.config`.
"""
from __future__ import annotations

from typing import Any

import ml_collections
from ml_collections import config_dict

from seg_jax.data.config import base_config as data_config
from seg_jax.predict.config import TTA_DEFAULTS, base_config as predict_config
from seg_jax.tune.config import base_config as tune_config


def split_arg(arg: str | None, *, variants, default: str, what: str) -> tuple[str, bool]:
    """`"variant[,tiny]"` → (variant, tiny?); an unknown variant or size lists the valid ones."""
    variant, _, size = (arg or default).partition(",")
    if variant not in variants:
        raise ValueError(f"unknown {what} variant {variant!r}; valid: {', '.join(variants)}")
    if size not in ("", "tiny"):
        raise ValueError(f"unknown size {size!r} in config argument {arg!r}; valid: 'tiny'")
    return variant, size == "tiny"


def crf_options() -> dict[str, Any]:
    """Dense-CRF parameters (pydensecrf's names) and the grid method's settings, for evaluators of type `crf`."""
    return {"iterations": 5, "gaussian_sxy": 3.0, "gaussian_compat": 3.0, "bilateral_sxy": 80.0,
            "bilateral_srgb": 13.0, "bilateral_compat": 10.0, "method": "grid",
            "downsample": config_dict.placeholder(int), "modes": 16}


def model(options: dict[str, Any]) -> ml_collections.ConfigDict:
    """`config.model`: the model's name and options, plus how training starts from pretrained weights.

    pretrained: None, or a torchvision / timm state-dict file (.safetensors, .npz; .pth with torch) loaded into the
        model's backbone (`seg_jax.models.backbones.load_pretrained`) when a run starts.
    pretrained_normalization: what the weights expect `data.mean` / `data.std` to be (checked when `pretrained` is
        set): "imagenet" (torchvision's, the data default) or "inception"; None skips the check.
    freeze_bn: the backbone's BatchNorm in inference mode, its statistics and affine parameters fixed
        (detectron2's FrozenBN).
    freeze_stages: the backbone's stages 1..k get no updates (detectron2's FREEZE_AT): 1 = VGG conv1_* / ResNet
        stem, 2 = also conv2_* / layer1, ..., 5 = the whole VGG blocks / ResNet (`optimizer.frozen` freezes any
        parameters by path).
    dtype: the compute dtype, "float32" or "bfloat16" (mixed precision: parameters, BatchNorm statistics, logits and
        losses stay float32).
    """
    return ml_collections.ConfigDict({"pretrained": config_dict.placeholder(str),
                                      "pretrained_normalization": "imagenet", "freeze_bn": False, "freeze_stages": 0,
                                      "dtype": "float32", **options})


def optimizer(options: dict[str, Any]) -> ml_collections.ConfigDict:
    """`config.optimizer`: name, learning_rate and the optimiser's options (`seg_jax.train.optim.make_optimizer`:
    weight_decay, momentum, nesterov, b1, b2, grad_clip_norm), plus its parameter groups. Parameters are named by
    their path in the parameter tree, module names joined by "/" (e.g. "backbone/conv1_1/kernel"); a prefix matches
    whole names from the top.

    decay_norm_and_bias: False: weight decay (adamw, sgd) only on kernels, not on biases, normalisation scales /
        offsets or scalars; True: on every parameter.
    lr_multipliers: {path prefix: factor} scaling the learning rate of the matching parameters (the longest
        matching prefix wins), e.g. {"backbone": 0.1} to fine-tune from pretrained weights; from the command line
        `--config.optimizer.lr_multipliers="{'backbone': 0.1}"`.
    frozen: path prefixes of parameters that get no update at all, e.g. ("backbone/conv1_1",); from the command
        line `--config.optimizer.frozen="('backbone/conv1_1', 'head')"` or the flag once per prefix (a comma does not
        split); `model.freeze_stages` / `freeze_bn` add the backbone modules they name.
    A prefix that matches no parameter is an error naming it.
    """
    return ml_collections.ConfigDict({"decay_norm_and_bias": False, "lr_multipliers": {}, "frozen": (), **options})


def base(dataset: str = "shapes") -> ml_collections.ConfigDict:
    """Every section an experiment has, at the defaults of the CPU-sized runs on the built-in data.

    Sections: seed, data (`seg_jax.data.config.base_config`), model, task (None = the model's), loss,
    class_weights, optimizer, schedule, train, evals (named evaluators, `seg_jax.evaluators`), crf_layer,
    predict (`seg_jax.predict.config`), tune (`seg_jax.tune.config`).
    """
    config = ml_collections.ConfigDict()
    config.name = "experiment"
    config.seed = 0
    # The parameters' initialisation seed; None: `seed`, which also sets data order, augmentation and sampling. Set
    # apart, it tells whether a run's result follows its initialisation or its data order.
    config.init_seed = config_dict.placeholder(int)
    config.data = data_config(dataset)
    config.model = model({"name": "unet"})  # name and options, plus the pretrained-weights fields (`model`)
    config.task = config_dict.placeholder(str)  # None: the model's registry entry says (semantic / detection)
    # The task's loss terms: a weight, or {"weight": w, <the loss's options>}.
    config.loss = ml_collections.ConfigDict({"cross_entropy": 1.0})
    # None, "inverse_frequency" or "median_frequency" (from the training split's label counts).
    config.class_weights = config_dict.placeholder(str)
    config.optimizer = optimizer(  # name and options, plus the parameter groups (`optimizer`)
        {"name": "adamw", "learning_rate": 3e-3, "weight_decay": 1e-4, "momentum": 0.9, "grad_clip_norm": 1.0})
    config.schedule = ml_collections.ConfigDict({"name": "cosine", "warmup_steps": 50, "end_factor": 0.01,
                                                 "power": 0.9})
    config.train = ml_collections.ConfigDict({
        "steps": 1500,
        # Steps the LR schedule spans: None = train.steps; a resumed or extended run keeps the span recorded
        # in its checkpoint (raising train.steps continues at the final LR) unless this is set.
        "schedule_steps": config_dict.placeholder(int),
        "batch_size": 8,           # global, split over all devices of all processes
        "log_every": 100,
        "checkpoint_every": 250,
        "keep_checkpoints": 2,
        "best_metric": "val/mean_iou",  # a scalar of config.evals, checked before the first step
        "best_mode": "max",
        # A run directory: start from its newest checkpoint's parameters and BatchNorm statistics (fine-tuning;
        # the optimiser and schedule start anew). In a study arm, "{study_workdir}/<arm>/seed{seed}" names the
        # same seed's run of an earlier arm.
        "init_from": config_dict.placeholder(str),
    })
    # Named evaluators (seg_jax.evaluators); split defaults to data.eval_split, every = 0: only at the end.
    config.evals = ml_collections.ConfigDict({"val": semantic_eval(every=750)})
    # CRF-as-RNN: train through a dense CRF with learnable Potts weights on top of the model.
    config.crf_layer = ml_collections.ConfigDict({
        "enabled": False, "iterations": 5, "gaussian_sxy": 3.0, "bilateral_sxy": 80.0, "bilateral_srgb": 13.0,
        "gaussian_compat_init": 3.0, "bilateral_compat_init": 10.0, "method": "grid",
        "downsample": config_dict.placeholder(int), "modes": 16})
    # --mode=predict: tiles, blending and outputs (`seg_jax.predict.config` documents every key).
    config.predict = predict_config()
    # --mode=tune: which evals entry's post-processing is searched, by which metric, over what (`seg_jax.tune.config`).
    config.tune = tune_config()
    # Where scalars and pictures go besides metrics.jsonl (`seg_jax.train.trackers`): any of "tensorboard", "wandb",
    # "mlflow"; W&B and MLflow are imported only when listed (pip install wandb / mlflow-skinny).
    config.logging = ml_collections.ConfigDict({
        "writers": ("tensorboard",),
        "wandb": {"project": "seg_jax", "entity": config_dict.placeholder(str), "mode": config_dict.placeholder(str),
                  "tags": ()},
        "mlflow": {"tracking_uri": config_dict.placeholder(str), "experiment": "seg_jax"}})
    return config


def semantic_eval(*, every: int, **options) -> dict[str, Any]:
    return {"type": "semantic", "every": every, "batch_size": 32, "num_pictures": 6, "boundary_width": 3,
            "tta": dict(TTA_DEFAULTS), **options}  # tta present (off) so that --config.evals.<e>.tta.* can set it


def crf_eval(*, every: int = 0) -> dict[str, Any]:
    return {"type": "crf", "every": every, "batch_size": 32, "num_pictures": 6, "boundary_width": 3,
            "tta": dict(TTA_DEFAULTS), **crf_options()}


def shrink_for_tests(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The test-sized run of any config: tiny data, 4 steps, small eval batches. The model is each file's."""
    config.name += "_tiny"
    config.data.variant = "tiny"
    config.data.crop_size = (32, 32)
    config.train.update(steps=4, batch_size=4, log_every=2, checkpoint_every=2)
    config.schedule.warmup_steps = 1
    for entry in config.evals.values():
        entry.update(every=4, batch_size=8, num_pictures=2)
    return config
