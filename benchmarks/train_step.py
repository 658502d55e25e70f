"""Compile time and steady-state images/s of the pmapped train and eval steps.

    python -m benchmarks.train_step --models=unet,fcn8s --size=128 --batch=8 --steps=10

Prints one JSON line per (model, step kind). Inputs are random images and labels of the given
size, so the data pipeline is not measured. Model options come from the experiment configs
(`experiments/default.py` for U-Net, `experiments/fcn.py` for FCNs) unless --full_size is set.
"""
from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import ml_collections
from absl import app, flags
from flax import jax_utils

from seg_jax import losses, models
from seg_jax.train import optim, steps
from seg_jax.train.state import create_train_state

_MODELS = flags.DEFINE_list("models", ["unet", "fcn8s"], "Registered model names.")
_SIZE = flags.DEFINE_integer("size", 128, "Square image size in pixels.")
_BATCH = flags.DEFINE_integer("batch", 8, "Global batch size (split over local devices).")
_CLASSES = flags.DEFINE_integer("classes", 6, "Number of classes.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps after the warm-up step.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype of the model.")
_FULL = flags.DEFINE_bool("full_size", False, "Paper-sized models (U-Net base 64 depth 4, FCN width 1.0).")

CPU_OPTIONS = {"unet": {"depth": 3, "base_width": 16, "norm": "batch"},
               "fcn": {"width_multiplier": 0.25, "fc6_kernel": 3, "norm": "batch"}}
FULL_OPTIONS = {"unet": {"depth": 4, "base_width": 64, "norm": "batch"},
                "fcn": {"width_multiplier": 1.0, "fc6_kernel": 7, "norm": "none"}}


def _options(name: str) -> dict:
    table = FULL_OPTIONS if _FULL.value else CPU_OPTIONS
    return dict(table["fcn" if name.startswith("fcn") else name], dtype=getattr(jnp, _DTYPE.value))


def _time(fn, args_fn, n: int) -> tuple[float, float]:
    """(first call seconds incl. compile, median seconds of n further calls)."""
    t = time.perf_counter()
    jax.block_until_ready(fn(*args_fn()))
    first = time.perf_counter() - t
    times = []
    for _ in range(n):
        args = args_fn()
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return first, float(np.median(times))


def bench(name: str) -> list[dict]:
    d = jax.local_device_count()
    b = _BATCH.value // d
    hw = (_SIZE.value, _SIZE.value)
    options = _options(name)
    init_model = models.create_model(name, num_classes=_CLASSES.value, **options)
    apply_model = models.create_model(name, num_classes=_CLASSES.value, norm_axis_name=steps.AXIS, **options)
    schedule = optim.make_schedule(_cfg(name="cosine", warmup_steps=0), base_lr=1e-3, total_steps=1000)
    tx = optim.make_optimizer(_cfg(name="adamw", weight_decay=1e-4), schedule)
    state = jax_utils.replicate(create_train_state(init_model=init_model, apply_model=apply_model, tx=tx,
                                                   seed=0, image_shape=hw))
    rng = np.random.default_rng(0)
    batch = {"image": rng.normal(size=(d, b, *hw, 3)).astype(np.float32),
             "label": rng.integers(0, _CLASSES.value, size=(d, b, *hw)).astype(np.int32),
             "weights": np.ones((d, b, *hw), np.float32), "mask": np.ones((d, b), np.float32)}
    train_fn = steps.pmapped_train_step(loss_fn=losses.make_loss_fn({"cross_entropy": 1.0, "dice": 1.0}),
                                        learning_rate_fn=schedule, class_weights=None, ignore_index=255)
    eval_fn = steps.pmapped_eval_step(num_classes=_CLASSES.value, ignore_index=255)
    holder = {"state": state}

    def train_once(batch):
        holder["state"], m = train_fn(holder["state"], batch, jax.random.PRNGKey(1))
        return m

    params = sum(x.size for x in jax.tree_util.tree_leaves(jax_utils.unreplicate(state).params))
    common = {"model": name, "size": _SIZE.value, "batch": _BATCH.value, "devices": d, "dtype": _DTYPE.value,
              "params": int(params), "device_kind": jax.devices()[0].device_kind, "options": {
                  k: v for k, v in options.items() if k != "dtype"}}
    out = []
    first, median = _time(train_once, lambda: ({k: batch[k] for k in ("image", "label", "weights")},), _STEPS.value)
    out.append({**common, "step": "train", "compile_s": round(first - median, 3), "step_s": round(median, 5),
                "images_per_s": round(_BATCH.value / median, 2)})
    eval_batch = {k: batch[k] for k in ("image", "label", "mask")}
    first, median = _time(lambda b_: eval_fn(holder["state"], b_)["confusion"], lambda: (eval_batch,), _STEPS.value)
    out.append({**common, "step": "eval", "compile_s": round(first - median, 3), "step_s": round(median, 5),
                "images_per_s": round(_BATCH.value / median, 2)})
    return out


def _cfg(**kwargs) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(kwargs)


def main(argv):
    del argv
    for name in _MODELS.value:
        for line in bench(name):
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    app.run(main)
