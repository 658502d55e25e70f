"""python launch.py --config=experiments/imbalance.py:median_frequency --workdir=runs/imbalance_median

Class-imbalance ablation on `shapes` (background ≈ 80 % of pixels, the thin bar < 1 %): the default
U-Net trained with plain cross-entropy, class-weighted cross-entropy, or cross-entropy + Dice.
Arguments: `ce`, `inverse_frequency`, `median_frequency`, `ce_dice`; append `,tiny` for tests.
"""
from __future__ import annotations

import ml_collections

from experiments import common, default

VARIANTS = ("ce", "inverse_frequency", "median_frequency", "ce_dice")
ARGS = VARIANTS + tuple(f"{v},tiny" for v in VARIANTS)


def get_config(arg: str | None = "ce") -> ml_collections.ConfigDict:
    variant, tiny = common.split_arg(arg, variants=VARIANTS, default="ce", what="imbalance")
    config = default.get_config("tiny" if tiny else None)  # the default experiment with another loss
    config.name = f"imbalance_{variant}" + ("_tiny" if tiny else "")
    config.loss = ml_collections.ConfigDict({"cross_entropy": 1.0})
    if variant == "ce_dice":
        config.loss.dice = 1.0
    if variant in ("inverse_frequency", "median_frequency"):
        config.class_weights = variant
    return config
