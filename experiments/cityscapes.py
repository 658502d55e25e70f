"""python launch.py --config=experiments/cityscapes.py:fcn8s --workdir=runs/cityscapes_fcn8s

FCN-8s (or `:unet`) on Cityscapes, 19 train ids, at the TFDS `cityscapes/semantic_segmentation`
layout. TFDS needs the manual download: put leftImg8bit_trainvaltest.zip and
gtFine_trainvaltest.zip in the folder given as --config.data.cityscapes_manual_dir. Sized for GPUs.
Append `,tiny` for the test-sized variant.
"""
from __future__ import annotations

import ml_collections

from experiments import default
from seg_jax import data

MODELS = {
    "fcn8s": {"name": "fcn8s", "width_multiplier": 1.0, "fc6_kernel": 7, "norm": "batch"},
    "unet": {"name": "unet", "depth": 4, "base_width": 64, "norm": "batch"},
}


ARGS = tuple(MODELS) + tuple(f"{v},tiny" for v in MODELS)


def get_config(arg: str | None = "fcn8s") -> ml_collections.ConfigDict:
    variant, size = default.split_arg(arg, variants=tuple(MODELS), default="fcn8s", what="cityscapes")
    config = default.get_config()
    config.name = f"cityscapes_{variant}"
    config.data = data.base_config("cityscapes")
    config.data.crop_size = (512, 1024)
    config.data.scale_range = (0.5, 2.0)
    config.data.eval_size = (1024, 2048)
    config.model = ml_collections.ConfigDict(MODELS[variant])
    config.loss = ml_collections.ConfigDict({"cross_entropy": 1.0})
    config.optimizer = ml_collections.ConfigDict(
        {"name": "sgd", "learning_rate": 0.01, "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4,
         "grad_clip_norm": None})
    config.schedule = ml_collections.ConfigDict({"name": "polynomial", "warmup_steps": 1000, "end_factor": 0.0,
                                                 "power": 0.9})
    config.train.steps = 80_000
    config.train.batch_size = 16
    config.train.log_every = 100
    config.train.eval_every = 4000
    config.train.checkpoint_every = 2000
    config.eval.batch_size = 8
    return default.apply_arg(config, size)
