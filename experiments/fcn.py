"""python launch.py --config=experiments/fcn.py:fcn8s --workdir=runs/fcn8s --config.train.steps=2000

FCN-32s / FCN-16s / FCN-8s (Long et al.) on a narrow VGG-16-style backbone, on `shapes`.
The argument picks the variant; append `,tiny` for the test-sized version (`fcn8s,tiny`).
"""
from __future__ import annotations

import ml_collections

from experiments import default

VARIANTS = ("fcn32s", "fcn16s", "fcn8s")


ARGS = VARIANTS + tuple(f"{v},tiny" for v in VARIANTS)


def get_config(arg: str | None = "fcn8s") -> ml_collections.ConfigDict:
    variant, size = default.split_arg(arg, variants=tuple(VARIANTS), default="fcn8s", what="FCN")
    config = default.get_config()
    config.name = variant
    config.model = ml_collections.ConfigDict(
        {"name": variant, "width_multiplier": 0.25, "fc6_kernel": 3, "norm": "batch"})
    config.loss = ml_collections.ConfigDict({"cross_entropy": 1.0})
    config.optimizer.learning_rate = 1e-3
    return default.apply_arg(config, size)
