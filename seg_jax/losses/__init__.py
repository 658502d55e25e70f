"""Losses: plain `jnp` functions with one signature, chosen by name from `LOSSES`.

Every pixel loss is called as::

    loss(logits [B, H, W, N], labels [B, H, W], *, weights=None, class_weights=None,
         ignore_index=255, axis_name=None) -> float32 scalar

plus its own keyword-only options (e.g. `eps`), which `config.loss` sets:
`{"cross_entropy": 1.0, "dice": {"weight": 1.0, "eps": 1e-6}}` (a bare number is the weight).
Adding a loss is one function with that signature, one `LOSSES.register` line below and one test.
A loss of the predicted distance map instead (`distance`, `data.distance_target`) is registered wrapped in
`DistanceTerm`: `loss(distance [B, H, W], target [B, H, W], *, weights=None, axis_name=None)`.
"""
from __future__ import annotations

from seg_jax.losses.combine import LOSSES, DistanceTerm, loss_options, make_loss_fn, needs_distance, parse_term
from seg_jax.losses.cross_entropy import softmax_cross_entropy
from seg_jax.losses.detection import (
    box_regression_loss,
    class_loss,
    mask_loss,
    rpn_box_loss,
    rpn_objectness_loss,
    smooth_l1,
)
from seg_jax.losses.dice import dice_loss
from seg_jax.losses.distance import distance_loss

LOSSES.register("cross_entropy")(softmax_cross_entropy)
LOSSES.register("dice")(dice_loss)
LOSSES.register("distance")(DistanceTerm(distance_loss))

__all__ = [
    "LOSSES", "DistanceTerm", "loss_options", "make_loss_fn", "needs_distance", "parse_term", "softmax_cross_entropy",
    "dice_loss", "distance_loss",
    # Mask R-CNN terms: their own signatures, so not in the pixel-loss registry.
    "box_regression_loss", "class_loss", "mask_loss", "rpn_box_loss", "rpn_objectness_loss", "smooth_l1",
]
