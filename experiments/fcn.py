"""python launch.py --config=experiments/fcn.py:fcn8s --workdir=runs/fcn8s --config.train.steps=2000

FCN-32s / FCN-16s / FCN-8s (Long et al.) on a narrow VGG-16-style backbone, on `shapes`.
The argument picks the variant; append `,tiny` for the test-sized version (`fcn8s,tiny`).
"""
from __future__ import annotations

import ml_collections

from experiments import common

VARIANTS = ("fcn32s", "fcn16s", "fcn8s")
ARGS = VARIANTS + tuple(f"{v},tiny" for v in VARIANTS)


def get_config(arg: str | None = "fcn8s") -> ml_collections.ConfigDict:
    variant, tiny = common.split_arg(arg, variants=VARIANTS, default="fcn8s", what="FCN")
    config = common.base("shapes")
    config.name = variant
    config.data.crop_size = (64, 64)
    config.model = common.model(
        {"name": variant, "width_multiplier": 0.25, "fc6_kernel": 3, "norm": "batch"})
    config.loss = ml_collections.ConfigDict({"cross_entropy": 1.0})
    config.optimizer.learning_rate = 1e-3
    if tiny:
        common.shrink_for_tests(config)
        config.model.width_multiplier = 1 / 16
    return config
