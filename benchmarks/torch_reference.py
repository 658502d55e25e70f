"""Seconds per train step of seg_jax against a PyTorch eager mirror of the same network, interleaved.

    python -m benchmarks.torch_reference
    python -m benchmarks.torch_reference --networks=unet_d3w16_bn --variants=base,model.dtype=bfloat16 --steps=5

Networks (`NETWORKS`) are experiment configs with a few model options overridden, all trained with plain
cross-entropy at --size × --size, batch --batch, --classes classes. The seg_jax step is built exactly as a run
builds it (`build_experiment`, `create_train_state`, `steps.pmapped_train_step`); the PyTorch step is
`benchmarks.torch_mirror`'s network (channels_last, `torch.set_num_threads(--threads)`), `F.cross_entropy`,
`clip_grad_norm_` and the config's Adam/AdamW. The mirror's parameter count must equal seg_jax's.

Timings are only comparable within one run (the CPU may be shared), so contenders take turns: each of --rounds
rounds times --steps steps of every seg_jax variant, then of PyTorch. Each `--variants` entry is one seg_jax
contender: `base`, or `+`-joined `section.field=value` config overrides (e.g. `model.dtype=bfloat16`); the
section `xla` sets XLA compiler options for that contender alone (e.g. `xla.xla_cpu_enable_fast_math=True`).
Prints one JSON line per (network, contender), then one per network with the ratios seg_jax / PyTorch of the
median step times (< 1: seg_jax is faster). `gflop_per_s` divides XLA's cost-analysis FLOP count of the compiled
seg_jax train step by a contender's median step time (the same count for PyTorch, which runs the same network).
"""
from __future__ import annotations

import ast
import json
import os
import time
from typing import Any, Callable

import jax
import numpy as np

# libgomp reads this once, at torch's import. Its default (ACTIVE) spins waiting threads at every barrier; on a
# CPU shared with another job that made PyTorch's steps up to 10x slower (2 threads); PASSIVE threads sleep.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402
from absl import app, flags  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from benchmarks.step_timing import flops_of  # noqa: E402
from benchmarks.torch_mirror import make_mirror, param_count  # noqa: E402
from seg_jax.studies.spec import load_config  # noqa: E402
from seg_jax.train import steps  # noqa: E402
from seg_jax.train.experiment import build_experiment, model_kwargs  # noqa: E402
from seg_jax.train.state import create_train_state  # noqa: E402

# name → (config spec, model options overridden on top of it)
NETWORKS = {
    "unet_d3w16_bn": ("experiments/default.py", {}),
    "unet_d4w32": ("experiments/default.py", {"depth": 4, "base_width": 32, "norm": "none"}),
    "fcn8s_w0.25_bn": ("experiments/fcn.py:fcn8s", {}),
    "fcn8s_w1": ("experiments/fcn.py:fcn8s", {"width_multiplier": 1.0, "norm": "none"}),
}

_NETWORKS = flags.DEFINE_list("networks", list(NETWORKS), f"Networks to time, of: {', '.join(NETWORKS)}.")
_VARIANTS = flags.DEFINE_list("variants", ["base"], "seg_jax contenders: `base` or `+`-joined config overrides.")
_SIZE = flags.DEFINE_integer("size", 128, "Square image size in pixels.")
_BATCH = flags.DEFINE_integer("batch", 8, "Global batch size.")
_CLASSES = flags.DEFINE_integer("classes", 6, "Number of classes.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved rounds.")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed steps per contender per round.")
_THREADS = flags.DEFINE_integer("threads", os.cpu_count(), "torch.set_num_threads.")


def parse_overrides(variant: str) -> dict[str, Any]:
    """`"model.dtype=bfloat16+model.depth=4"` → {"model.dtype": "bfloat16", "model.depth": 4}; `base` → {}."""
    if variant == "base":
        return {}
    out = {}
    for item in variant.split("+"):
        key, sep, text = item.partition("=")
        if not sep or "." not in key:
            raise app.UsageError(f"variant item {item!r} is not section.field=value")
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key] = text  # a bare word such as bfloat16
    return out


def network_config(network: str, overrides: dict[str, Any], *, batch_size: int):
    """The experiment config of `network` with `overrides` applied, trained with cross-entropy only."""
    spec, model_options = NETWORKS[network]
    config = load_config(spec)
    config.model.update(model_options)
    config.loss = {"cross_entropy": 1.0}
    config.train.batch_size = batch_size
    for dotted, value in overrides.items():
        section, field = dotted.split(".", 1)
        config[section][field] = value
    return config


def jax_contender(config, batch: dict[str, np.ndarray], *,
                  compiler_options: dict[str, Any]) -> tuple[Callable[[], None], int, float]:
    """(one train step, parameter count, XLA FLOPs per step) of seg_jax for `config` on the 1-device `batch`.

    With `compiler_options` (XLA debug options, as XLA_FLAGS names them without the dashes) the step is the
    pmapped step compiled ahead of time with them, so flag settings can take turns within one process.
    """
    exp = build_experiment(config, num_classes=_CLASSES.value)
    hw = batch["image"].shape[2:4]
    state = create_train_state(init_model=exp.init_model, apply_model=exp.task.model, tx=exp.tx, seed=0,
                               image_shape=hw)
    params = sum(x.size for x in jax.tree_util.tree_leaves(state.params))
    state = steps.replicate(state)
    train_fn = steps.pmapped_train_step(task=exp.task, learning_rate_fn=exp.learning_rate_fn)
    batch = {k: batch[k] for k in exp.task.train_keys}
    rng = jax.random.PRNGKey(1)
    compiled = train_fn.lower(state, batch, rng).compile(compiler_options=compiler_options or None)
    if compiler_options:
        train_fn = compiled
    holder = {"state": state}

    def step() -> None:
        holder["state"], metrics = train_fn(holder["state"], batch, rng)
        jax.block_until_ready(metrics)

    return step, int(params), flops_of(compiled) or float("nan")


def torch_contender(config, batch: dict[str, np.ndarray]) -> tuple[Callable[[], None], int]:
    """(one train step, parameter count) of the PyTorch mirror of `config`'s model, its optimiser and CE loss."""
    model = make_mirror(config.model.name, num_classes=_CLASSES.value, **model_kwargs(config))
    opt_cfg = config.optimizer
    betas = (opt_cfg.get("b1", 0.9), opt_cfg.get("b2", 0.999))
    if opt_cfg.name == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=opt_cfg.learning_rate, betas=betas,
                                weight_decay=opt_cfg.get("weight_decay", 1e-4))
    elif opt_cfg.name == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=opt_cfg.learning_rate, betas=betas)
    else:
        raise app.UsageError(f"optimizer {opt_cfg.name!r} has no torch mirror here (adam, adamw)")
    clip = opt_cfg.get("grad_clip_norm", None)
    image = torch.from_numpy(batch["image"][0]).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    label = torch.from_numpy(batch["label"][0]).long()
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        logits = model(image)
        loss = F.cross_entropy(logits, label)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        # seg_jax's step also returns pixel accuracy; .item() is where an async backend would sync.
        (logits.argmax(1) == label).float().mean().item()

    return step, param_count(model)


def _timed(step: Callable[[], None], n: int) -> list[float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return times


def bench(network: str) -> list[dict]:
    rng = np.random.default_rng(0)
    hw = (_SIZE.value, _SIZE.value)
    batch = {"image": rng.normal(size=(1, _BATCH.value, *hw, 3)).astype(np.float32),
             "label": rng.integers(0, _CLASSES.value, size=(1, _BATCH.value, *hw)).astype(np.int32),
             "weights": np.ones((1, _BATCH.value, *hw), np.float32)}
    contenders, flops, params = {}, {}, {}
    for variant in _VARIANTS.value:
        overrides = parse_overrides(variant)
        xla_options = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("xla.")}
        config = network_config(network, {k: v for k, v in overrides.items() if not k.startswith("xla.")},
                                batch_size=_BATCH.value)
        if config.model.name not in ("unet", "fcn8s", "fcn16s", "fcn32s"):
            raise app.UsageError(f"{network}: no torch mirror for model {config.model.name!r}")
        contenders[variant], params[variant], flops[variant] = jax_contender(config, batch,
                                                                              compiler_options=xla_options)
    config = network_config(network, {}, batch_size=_BATCH.value)
    contenders["torch"], params["torch"] = torch_contender(config, batch)
    if len(set(params.values())) != 1:
        raise SystemExit(f"{network}: parameter counts differ, the mirror is wrong: {params}")

    for step in contenders.values():
        step()  # compiles (a state from `steps.replicate` is placed as the step returns it: no second compile)
    times = {name: [] for name in contenders}
    for _ in range(_ROUNDS.value):
        for name, step in contenders.items():
            times[name].append(_timed(step, _STEPS.value))

    spec, options = NETWORKS[network]
    common = {"network": network, "config": spec, "model_options": options, "params": params["torch"],
              "size": _SIZE.value, "batch": _BATCH.value, "classes": _CLASSES.value, "threads": _THREADS.value,
              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "xla_flags": os.environ.get("XLA_FLAGS", "")}
    median = {name: float(np.median(sum(t, []))) for name, t in times.items()}
    out = []
    for name, t in times.items():
        gflop = flops.get(name, flops[_VARIANTS.value[0]]) / 1e9
        out.append({**common, "contender": name, "step_s": round(median[name], 4),
                    "round_medians_s": [round(float(np.median(r)), 4) for r in t],
                    "gflop_per_step": round(gflop, 2), "gflop_per_s": round(gflop / median[name], 1)})
    ratios = {name: round(median[name] / median["torch"], 3) for name in _VARIANTS.value}
    round_ratios = {name: [round(float(np.median(a) / np.median(b)), 3) for a, b in zip(times[name], times["torch"])]
                    for name in _VARIANTS.value}
    out.append({**common, "summary": "seg_jax / torch step time", "ratio": ratios, "round_ratios": round_ratios})
    return out


def main(argv):
    del argv
    torch.set_num_threads(_THREADS.value)
    for network in _NETWORKS.value:
        if network not in NETWORKS:
            raise app.UsageError(f"unknown network {network!r}; valid: {', '.join(NETWORKS)}")
        for line in bench(network):
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    app.run(main)
