"""python launch.py --config=experiments/imbalance.py:median_frequency --workdir=runs/imbalance_median

Class-imbalance ablation on `shapes` (background > 50 % of pixels, the thin bar < 1 %): the default
U-Net trained with plain cross-entropy, class-weighted cross-entropy, or cross-entropy + Dice.
Arguments: `ce`, `inverse_frequency`, `median_frequency`, `ce_dice`; append `,tiny` for tests.
"""
from __future__ import annotations

import ml_collections

from experiments import default

VARIANTS = ("ce", "inverse_frequency", "median_frequency", "ce_dice")


ARGS = VARIANTS + tuple(f"{v},tiny" for v in VARIANTS)


def get_config(arg: str | None = "ce") -> ml_collections.ConfigDict:
    variant, size = default.split_arg(arg, variants=tuple(VARIANTS), default="ce", what="imbalance")
    config = default.get_config()
    config.name = f"imbalance_{variant}"
    config.loss = ml_collections.ConfigDict({"cross_entropy": 1.0, **({"dice": 1.0} if variant == "ce_dice" else {})})
    if variant in ("inverse_frequency", "median_frequency"):
        config.class_weights = variant
    return default.apply_arg(config, size)
