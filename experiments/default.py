"""python launch.py  (the same as --config=experiments/default.py --workdir=runs/default)

The default experiment: a small U-Net trained with cross-entropy + Dice on the built-in `shapes`
dataset, sized to train in a few minutes on 2 CPU cores. `:tiny` shrinks everything for tests.
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from seg_jax import data


ARGS = (None, "tiny")  # every argument this file accepts; each is built by tests/test_experiments.py


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "default"
    config.seed = 0
    config.data = data.base_config("shapes")
    config.data.crop_size = (64, 64)

    config.model = ml_collections.ConfigDict({"name": "unet", "depth": 3, "base_width": 16, "norm": "batch"})
    # Weighted sum of registered losses (seg_jax.losses.LOSSES).
    config.loss = ml_collections.ConfigDict({"cross_entropy": 1.0, "dice": 1.0})
    # None, "inverse_frequency" or "median_frequency" (from the training split's label counts).
    config.class_weights = ml_collections.FieldReference(None, field_type=str)

    config.optimizer = ml_collections.ConfigDict(
        {"name": "adamw", "learning_rate": 3e-3, "weight_decay": 1e-4, "momentum": 0.9, "grad_clip_norm": 1.0})
    config.schedule = ml_collections.ConfigDict({"name": "cosine", "warmup_steps": 50, "end_factor": 0.01,
                                                 "power": 0.9})
    config.train = ml_collections.ConfigDict({
        "steps": 1500,
        "batch_size": 8,           # global, split over all devices of all processes
        "log_every": 100,
        "eval_every": 750,
        "checkpoint_every": 250,
        "keep_checkpoints": 2,
        "best_metric": "mean_iou",  # any scalar of the evaluation record
        "best_mode": "max",
    })
    config.eval = ml_collections.ConfigDict({
        "batch_size": 32,
        "num_pictures": 6,
        "boundary_width": 3,  # px around true edges for boundary (trimap) accuracy
        # Dense CRF on the predictions, reported beside the plain ones (pydensecrf's parameter names).
        "crf": {"enabled": False, "iterations": 5, "gaussian_sxy": 3.0, "gaussian_compat": 3.0,
                "bilateral_sxy": 80.0, "bilateral_srgb": 13.0, "bilateral_compat": 10.0, "method": "grid",
                "downsample": config_dict.placeholder(int), "modes": 16},
    })
    # CRF-as-RNN: train through a dense CRF with learnable Potts weights on top of the model.
    config.crf_layer = ml_collections.ConfigDict({
        "enabled": False, "iterations": 5, "gaussian_sxy": 3.0, "bilateral_sxy": 80.0, "bilateral_srgb": 13.0,
        "gaussian_compat_init": 3.0, "bilateral_compat_init": 10.0, "method": "grid",
        "downsample": config_dict.placeholder(int), "modes": 16})
    return apply_arg(config, arg)


def split_arg(arg: str | None, *, variants, default: str, what: str) -> tuple[str, str | None]:
    """`"variant[,tiny]"` → (variant, "tiny" or None); an unknown variant lists the valid ones."""
    variant, _, size = (arg or default).partition(",")
    if variant not in variants:
        raise ValueError(f"unknown {what} variant {variant!r}; valid: {', '.join(variants)}")
    return variant, size or None


def apply_arg(config: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
    """`tiny`: a test-sized variant of any config (tiny data, few steps, narrow model)."""
    if arg in (None, ""):
        return config
    if arg != "tiny":
        raise ValueError(f"unknown config argument {arg!r}; valid: 'tiny'")
    config.name += "_tiny"
    config.data.variant = "tiny"
    config.data.crop_size = (32, 32)
    config.train.steps = 4
    config.train.batch_size = 4
    config.train.log_every = 2
    config.train.eval_every = 4
    config.train.checkpoint_every = 2
    config.schedule.warmup_steps = 1
    config.eval.batch_size = 8
    config.eval.num_pictures = 2
    if "base_width" in config.model:
        config.model.base_width = 4
        config.model.depth = 2
    if "width_multiplier" in config.model:
        config.model.width_multiplier = 1 / 16
    return config
