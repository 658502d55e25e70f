"""Seeds at once vs one by one: S vmapped train steps (`seg_jax.train.seeds`) against S separate steps.

    python -m benchmarks.vmap_seeds --config=experiments/default.py --seeds=3 --size=64

Times, in one run and interleaved, S pmapped steps of the config's model on random batches against one pmapped
`vmap` step over S stacked states, and prints the ratio (> 1: training seeds together wins).
"""
from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from seg_jax.studies.spec import load_config
from seg_jax.train import seeds, steps
from seg_jax.train.experiment import build_experiment
from seg_jax.train.state import create_train_state

_CONFIG = flags.DEFINE_string("config", "experiments/default.py", "Experiment config file[:arg].")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds S trained together.")
_SIZE = flags.DEFINE_integer("size", 64, "Square image size in pixels.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per round.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved rounds.")


def main(argv):
    del argv
    config = load_config(_CONFIG.value)
    exp = build_experiment(config, num_classes=6)
    s, hw, d = _SEEDS.value, (_SIZE.value, _SIZE.value), jax.local_device_count()
    b = config.train.batch_size // d
    states = [create_train_state(init_model=exp.init_model, apply_model=exp.task.model, tx=exp.tx, seed=k,
                                 image_shape=hw) for k in range(s)]
    rng = np.random.default_rng(0)
    batch = {"image": rng.normal(size=(d, b, *hw, 3)).astype(np.float32),
             "label": rng.integers(0, 6, (d, b, *hw)).astype(np.int32), "weights": np.ones((d, b, *hw), np.float32)}
    stacked_batch = {k: np.repeat(v[:, None], s, 1) for k, v in batch.items()}
    single = steps.pmapped_train_step(task=exp.task, learning_rate_fn=exp.learning_rate_fn)
    together = seeds.pmapped_vmapped_train_step(task=exp.task, learning_rate_fn=exp.learning_rate_fn)
    separate = [steps.replicate(st) for st in states]
    stacked = steps.replicate(jax.tree_util.tree_map(lambda *x: jnp.stack(x), *states))
    keys = jnp.stack([jax.random.PRNGKey(k) for k in range(s)])
    key = jax.random.PRNGKey(0)

    def one_by_one(n):
        for _ in range(n):
            for k in range(s):
                separate[k], m = single(separate[k], batch, key)
        jax.block_until_ready(m)

    def at_once(n):
        nonlocal stacked
        for _ in range(n):
            stacked, m = together(stacked, stacked_batch, keys)
        jax.block_until_ready(m)

    one_by_one(1), at_once(1)  # compile
    for round_ in range(_ROUNDS.value):
        t = time.perf_counter()
        one_by_one(_STEPS.value)
        apart = (time.perf_counter() - t) / _STEPS.value
        t = time.perf_counter()
        at_once(_STEPS.value)
        joint = (time.perf_counter() - t) / _STEPS.value
        print(json.dumps({"config": _CONFIG.value, "seeds": s, "size": _SIZE.value, "round": round_,
                          "separate_s_per_step_of_all_seeds": round(apart, 4), "vmapped_s": round(joint, 4),
                          "gain": round(apart / joint, 3), "device_kind": jax.devices()[0].device_kind}), flush=True)


if __name__ == "__main__":
    app.run(main)
