"""python launch.py --config=experiments/cityscapes.py:fcn8s --workdir=runs/cityscapes_fcn8s

FCN-8s (or `:unet`) on Cityscapes, 19 train ids, at the TFDS `cityscapes/semantic_segmentation`
layout. TFDS needs the manual download: put leftImg8bit_trainvaltest.zip and
gtFine_trainvaltest.zip in the folder given as --config.data.cityscapes_manual_dir. Sized for GPUs.
Append `,tiny` for the test-sized variant.
"""
from __future__ import annotations

import ml_collections

from experiments import common

MODELS = {
    "fcn8s": {"name": "fcn8s", "width_multiplier": 1.0, "fc6_kernel": 7, "norm": "batch"},
    "unet": {"name": "unet", "depth": 4, "base_width": 64, "norm": "batch"},
}
TINY_MODELS = {"fcn8s": {"width_multiplier": 1 / 16}, "unet": {"depth": 2, "base_width": 4}}
ARGS = tuple(MODELS) + tuple(f"{v},tiny" for v in MODELS)


def get_config(arg: str | None = "fcn8s") -> ml_collections.ConfigDict:
    variant, tiny = common.split_arg(arg, variants=tuple(MODELS), default="fcn8s", what="cityscapes")
    config = common.base("cityscapes")
    config.name = f"cityscapes_{variant}"
    config.data.crop_size = (512, 1024)
    config.data.scale_range = (0.5, 2.0)
    config.data.eval_size = (1024, 2048)
    config.model = common.model(MODELS[variant])
    config.optimizer = common.optimizer(
        {"name": "sgd", "learning_rate": 0.01, "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4,
         "grad_clip_norm": None})
    config.schedule = ml_collections.ConfigDict({"name": "polynomial", "warmup_steps": 1000, "end_factor": 0.0,
                                                 "power": 0.9})
    config.train.update(steps=80_000, batch_size=16, log_every=100, checkpoint_every=2000)
    config.evals.val.update(every=4000, batch_size=8)
    if tiny:
        common.shrink_for_tests(config)
        config.model.update(TINY_MODELS[variant])
    return config
