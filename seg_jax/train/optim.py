"""Optimiser and learning-rate schedule from the config."""
from __future__ import annotations

from typing import Any, Callable

import ml_collections
import optax

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "polynomial")


def make_schedule(cfg: ml_collections.ConfigDict, *, base_lr: float, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 over `cfg.warmup_steps`, then constant, cosine or polynomial decay.

    Config keys: name, warmup_steps, end_factor (final lr / base lr), power (polynomial).
    """
    warmup = int(cfg.get("warmup_steps", 0))
    decay_steps = max(total_steps - warmup, 1)
    end_value = base_lr * float(cfg.get("end_factor", 0.0))
    if cfg.name == "constant":
        after = optax.constant_schedule(base_lr)
    elif cfg.name == "cosine":
        after = optax.cosine_decay_schedule(base_lr, decay_steps, alpha=end_value / base_lr if base_lr else 0.0)
    elif cfg.name == "polynomial":
        after = optax.polynomial_schedule(base_lr, end_value, float(cfg.get("power", 0.9)), decay_steps)
    else:
        raise ValueError(f"unknown config.schedule.name {cfg.name!r}; valid names: {', '.join(SCHEDULES)}")
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, base_lr, warmup), after], [warmup])


def make_optimizer(cfg: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
    """adam / adamw / sgd (with momentum, optionally nesterov) with optional global-norm clipping.

    Config keys: name, weight_decay, momentum, nesterov, b1, b2, grad_clip_norm.
    """
    if cfg.name == "adam":
        opt = optax.adam(schedule, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999))
    elif cfg.name == "adamw":
        opt = optax.adamw(schedule, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999),
                          weight_decay=cfg.get("weight_decay", 1e-4))
    elif cfg.name == "sgd":
        opt = optax.sgd(schedule, momentum=cfg.get("momentum", 0.9), nesterov=cfg.get("nesterov", False))
        if cfg.get("weight_decay", 0.0):
            opt = optax.chain(optax.add_decayed_weights(cfg.weight_decay), opt)
    else:
        raise ValueError(f"unknown config.optimizer.name {cfg.name!r}; valid names: {', '.join(OPTIMIZERS)}")
    clip = cfg.get("grad_clip_norm", None)
    return optax.chain(optax.clip_by_global_norm(clip), opt) if clip else opt


def with_frozen(tx: optax.GradientTransformation,
                labels: Callable[[Any], Any]) -> optax.GradientTransformation:
    """`tx` for the parameters `labels(params)` marks "trained"; those marked "frozen" get zero updates (no
    gradient step, momentum or weight decay), so they keep their values exactly."""
    return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)
