"""Optimiser and learning-rate schedule from the config, and the optimiser's parameter groups.

Parameter groups address parameters by their path in the flattened parameter tree, names joined by "/" (e.g.
`backbone/conv1_1/kernel`); a prefix matches whole names only ("backbone" matches `backbone/...`, not
`backbone2/...`). They are: which parameters get weight decay (`decay_mask`), per-prefix learning-rate factors
(`scale_by_prefix`) and frozen parameters (`with_frozen`).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
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
    """adam / adamw / sgd (with momentum, optionally nesterov) with optional global-norm clipping, weight decay
    on the kernels only (unless `decay_norm_and_bias`) and per-prefix learning-rate factors.

    Config keys: name, weight_decay, momentum, nesterov, b1, b2, grad_clip_norm;
      decay_norm_and_bias: False: adamw's and sgd's weight decay skip biases, normalisation scales / offsets and
        scalars (`decay_mask`); True: every parameter decays. Absent (configs saved before the key existed): True,
        as those runs trained.
      lr_multipliers: {path prefix: factor}, e.g. {"backbone": 0.1}: `scale_by_prefix`. Empty: none.
    Freezing (`optimizer.frozen`, `model.freeze_stages`) wraps the result: `with_frozen`.
    """
    mask = None if cfg.get("decay_norm_and_bias", True) else decay_mask
    if cfg.name == "adam":
        opt = optax.adam(schedule, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999))
    elif cfg.name == "adamw":
        opt = optax.adamw(schedule, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999),
                          weight_decay=cfg.get("weight_decay", 1e-4), mask=mask)
    elif cfg.name == "sgd":
        opt = optax.sgd(schedule, momentum=cfg.get("momentum", 0.9), nesterov=cfg.get("nesterov", False))
        if cfg.get("weight_decay", 0.0):
            opt = optax.chain(optax.add_decayed_weights(cfg.weight_decay, mask=mask), opt)
    else:
        raise ValueError(f"unknown config.optimizer.name {cfg.name!r}; valid names: {', '.join(OPTIMIZERS)}")
    multipliers = dict(cfg.get("lr_multipliers", None) or {})
    if multipliers:  # absent, no transformation: the optimiser state keeps the structure older checkpoints have
        opt = optax.chain(opt, scale_by_prefix(multipliers))
    clip = cfg.get("grad_clip_norm", None)
    return optax.chain(optax.clip_by_global_norm(clip), opt) if clip else opt


# ---------------------------------------------------------------------------------------------- parameter groups
def path_name(key_path: Sequence[Any]) -> str:
    """A parameter's path as "/"-joined names: (DictKey('backbone'), DictKey('conv1_1'), ...) → "backbone/conv1_1"."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in key_path)


def matches(path: str, prefix: str) -> bool:
    """Whether `prefix` is `path` or its leading whole names ("a/b" matches "a/b/c", not "a/bc")."""
    return path == prefix or path.startswith(prefix + "/")


def check_prefixes(params: Any, prefixes: Iterable[str], *, field: str, among: str = "parameter") -> None:
    """Raises ValueError naming `config.<field>` and the first prefix that matches no leaf of `params`."""
    paths = [path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    for prefix in prefixes:
        if not any(matches(path, prefix) for path in paths):
            top = sorted({path.split("/")[0] for path in paths})
            raise ValueError(f"{prefix!r} in config.{field} matches no {among} (paths are '/'-joined module "
                             f"names from the top: {', '.join(top)}, ...)")


def decay_mask(params: Any) -> Any:
    """True for the leaves weight decay applies to: those with ≥ 2 dimensions (conv / dense kernels); False for
    biases, normalisation scales and offsets (1-D) and scalars such as the CRF's compatibilities — timm's and
    most papers' rule, as their decay pulls towards 0 what has no reason to be small."""
    return jax.tree.map(lambda x: x.ndim >= 2, params)


def scale_by_prefix(multipliers: Mapping[str, float]) -> optax.GradientTransformation:
    """Each update times the factor of the longest prefix in `multipliers` that matches its parameter's path
    (1 where none does). Placed last, after the learning rate, this is a per-group learning rate: every optimiser
    here scales its whole update — adamw's decoupled decay included — by the learning rate (PyTorch's param-group
    `lr`). The init raises ValueError naming a prefix that matches no parameter."""
    multipliers = {str(k).strip("/"): float(v) for k, v in multipliers.items()}
    by_length = sorted(multipliers, key=len, reverse=True)

    def factor(key_path) -> float:
        path = path_name(key_path)
        return next((multipliers[p] for p in by_length if matches(path, p)), 1.0)

    def init(params):
        # inside `with_frozen`, frozen leaves are masked out of `params`
        check_prefixes(params, multipliers, field="optimizer.lr_multipliers", among="parameter that trains")
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        scaled = jax.tree_util.tree_map_with_path(lambda p, u: u if factor(p) == 1.0 else u * factor(p), updates)
        return scaled, state

    return optax.GradientTransformation(init, update)


def with_frozen(tx: optax.GradientTransformation,
                prefixes: Callable[[Any], Sequence[str]]) -> optax.GradientTransformation:
    """`tx` for the parameters whose path matches none of `prefixes(params)`; the others get zero updates (no
    gradient step, momentum or weight decay), so they keep their values exactly. The init raises ValueError
    naming a prefix that matches no parameter."""
    def labels(params):
        frozen = [str(p).strip("/") for p in prefixes(params)]
        check_prefixes(params, frozen, field="optimizer.frozen")
        return jax.tree_util.tree_map_with_path(
            lambda p, _: "frozen" if any(matches(path_name(p), f) for f in frozen) else "trained", params)
    return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)
