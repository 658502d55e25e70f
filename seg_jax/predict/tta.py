"""Test-time augmentation (flips and scales) of a semantic predict function, one implementation for eval and predict.

The config option, in an evaluator entry (`evals.<name>.tta`, types "semantic" and "crf") or in `predict.tta`:

    {"flips": True, "scales": (0.75, 1.0, 1.25)}     # default: flips False, scales (1.0,) = off

Each view's softmax probabilities are averaged (as MMSegmentation averages softmax scores): probabilities are on
one scale whatever the view, whereas logits of different views may differ by a per-pixel offset that softmax
ignores but an average of logits would not. The result is returned as log-probabilities, so code that takes the
argmax or the softmax of logits works unchanged (softmax of log-probabilities is the probabilities themselves).

Light to import (jax only): evaluators and the predictor both import it.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from seg_jax.predict.config import TTA_DEFAULTS as DEFAULTS


def tta_options(value: Mapping[str, Any] | None, *, field: str) -> dict[str, Any]:
    """The checked TTA option `value` (None or a mapping with keys of `DEFAULTS`) with defaults filled in:
    `{"flips": bool, "scales": tuple[float, ...]}`.

    Raises:
        ConfigError: naming `field` (e.g. "evals.val.tta") or `field.<key>` for an unknown key, a non-boolean
            `flips`, or `scales` not a non-empty sequence of positive numbers.
    """
    from seg_jax.train.validate import ConfigError
    if value is None:
        return dict(DEFAULTS)
    value = value.to_dict() if hasattr(value, "to_dict") else value
    if not isinstance(value, Mapping):
        raise ConfigError(field, f"must be a dict with keys {', '.join(DEFAULTS)} (or None), got {value!r}")
    unknown = sorted(set(value) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"{field}.{unknown[0]}", f"unknown TTA option; valid: {', '.join(DEFAULTS)}")
    options = {**DEFAULTS, **value}
    if not isinstance(options["flips"], bool):
        raise ConfigError(f"{field}.flips", f"must be True or False, got {options['flips']!r}")
    scales = options["scales"]
    scales = (scales,) if isinstance(scales, (int, float)) and not isinstance(scales, bool) else scales
    ok = isinstance(scales, (tuple, list)) and len(scales) > 0 and all(
        isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) and s > 0 for s in scales)
    if not ok:
        raise ConfigError(f"{field}.scales", f"must be a non-empty tuple of positive numbers (image size factors), "
                                             f"got {options['scales']!r}")
    return {"flips": options["flips"], "scales": tuple(float(s) for s in scales)}


def is_off(options: Mapping[str, Any]) -> bool:
    """Whether checked `options` (`tta_options`) leave the prediction as it is: no flip, the one scale 1."""
    return not options["flips"] and tuple(options["scales"]) == (1.0,)


def _resize(x: jax.Array, height: int, width: int) -> jax.Array:
    if x.shape[1:3] == (height, width):
        return x
    return jax.image.resize(x, (x.shape[0], height, width, x.shape[3]), method="bilinear")


def tta_logits(predict_fn: Callable[[jax.Array], jax.Array], images: jax.Array, *, flips: bool,
               scales: tuple[float, ...]) -> jax.Array:
    """Log of the mean softmax probabilities of `predict_fn` over the views of `images`.

    predict_fn: normalised images float `[b, h, w, 3]` -> logits `[b, h, w, N]`, for any h, w (the models pad
        their input to their multiple and crop back, `seg_jax.models.layers.pad_to_multiple`).
    images: normalised float32 `[B, H, W, 3]`.
    flips: also each view flipped left-right (its logits flipped back).
    scales: image size factors; a view's side is `round(side * scale)` pixels (at least 1), resized with
        `jax.image.resize` (bilinear, antialiased when shrinking), its logits resized back to H x W (bilinear);
        scale 1 is not resized.

    Returns float32 `[B, H, W, N]` log-probabilities averaged over `len(scales) * (2 if flips else 1)` views.
    """
    height, width = images.shape[1:3]
    views = []
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = _resize(images, *size)
        inputs = [(scaled, False)] + ([(jnp.flip(scaled, axis=2), True)] if flips else [])
        for view, flipped in inputs:
            logits = predict_fn(view)
            logits = jnp.flip(logits, axis=2) if flipped else logits
            views.append(jax.nn.log_softmax(_resize(logits.astype(jnp.float32), height, width), axis=-1))
    stacked = jnp.stack(views)
    return jax.scipy.special.logsumexp(stacked, axis=0) - jnp.log(float(len(views)))  # log(mean(exp(log p)))


def with_tta(predict: Callable[[Any, jax.Array], jax.Array],
             options: Mapping[str, Any]) -> Callable[[Any, jax.Array], jax.Array]:
    """`predict(variables, images) -> logits` with the checked TTA `options` (`tta_options`) applied through
    `tta_logits`; `predict` itself when they are off, so its outputs stay exactly the plain logits."""
    if is_off(options):
        return predict

    def predict_tta(variables: Any, images: jax.Array) -> jax.Array:
        return tta_logits(functools.partial(predict, variables), images, flips=bool(options["flips"]),
                          scales=tuple(options["scales"]))
    return predict_tta
