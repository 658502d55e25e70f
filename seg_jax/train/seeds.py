"""Several seeds of one config trained at once: `jax.vmap` over stacked parameters and optimiser states.

Each seed keeps what its separate run would have: its own initialisation (`loop.init_seed`), data order and
augmentation (`train_batches(seed=...)`), dropout/sampling key (`PRNGKey(seed + 1)`), workdir, checkpoints, logs
and results — so a study can mix seeds trained together and seeds trained alone. The batch carries a seed axis
after the device axis, `[D, S, b, ...]`; evaluation runs each seed's slice of the state through the evaluators.

Whether it is faster depends on the backend: XLA turns the vmapped convolutions into grouped convolutions, which
XLA:CPU runs slowly (measured on 2 CPU cores, default U-Net, S = 3: 0.28x the speed of three separate steps), so
studies use it only where asked (`study.vmap_seeds`).
"""
from __future__ import annotations

import functools
import json
import pathlib
from typing import Sequence

import jax
import ml_collections
import numpy as np
from absl import logging

from seg_jax import data
from seg_jax.train import loop, steps, workdir as wd
from seg_jax.train.state import unreplicate_to_host


class SeedsApart(ValueError):
    """The runs cannot be trained together (other than in seed, or standing at different steps)."""


def _without_seed(config: ml_collections.ConfigDict) -> dict:
    flat = json.loads(wd.config_to_json(config))
    flat.pop("seed", None)
    flat.pop("name", None)
    return flat


def check_same_but_seed(configs: Sequence[ml_collections.ConfigDict]) -> None:
    """Raises `SeedsApart` unless `configs` differ only in `seed` and `name` (and have distinct seeds)."""
    first = _without_seed(configs[0])
    for config in configs[1:]:
        if _without_seed(config) != first:
            raise SeedsApart("seeds are trained together only for configs that differ in seed alone")
    seeds = [int(c.seed) for c in configs]
    if len(set(seeds)) != len(seeds):
        raise SeedsApart(f"seeds repeat: {seeds}")


def pmapped_vmapped_train_step(*, task, learning_rate_fn):
    """`steps.train_step` vmapped over a leading seed axis of state, batch and key, then pmapped over devices."""
    step = functools.partial(steps.train_step, task=task, learning_rate_fn=learning_rate_fn)
    return jax.pmap(jax.vmap(step, in_axes=(0, 0, 0)), axis_name=steps.AXIS, in_axes=(0, 0, None),
                    donate_argnums=(0,))


def _seed_slice(tree, s: int):
    """Seed `s` of a tree with leaves `[D, S, ...]`, as a replicated tree `[D, ...]`."""
    return jax.tree_util.tree_map(lambda x: x[:, s], tree)


def train_seeds(configs: Sequence[ml_collections.ConfigDict],
                workdirs: Sequence[str | pathlib.Path]) -> list[dict[str, float]]:
    """Trains and evaluates `configs` (equal but for the seed) together, one workdir each; returns each run's
    final scalars like `loop.train_and_evaluate` (each workdir resumes, refuses and logs as a run of its own).

    All runs must start from the same step (fresh, or resumed at one step); otherwise `SeedsApart`, and the caller
    runs them one by one.
    """
    check_same_but_seed(configs)
    workdirs = [pathlib.Path(w) for w in workdirs]
    config = configs[0]
    run = loop.build_run(config)
    opened = [loop.open_workdir(cfg, w, run, state=loop.initial_state(cfg, run.exp, seed=loop.init_seed(cfg)))
              for cfg, w in zip(configs, workdirs)]
    starts = sorted({o.start for o in opened})
    if len(starts) > 1:
        _close(opened)
        raise SeedsApart(f"the runs stand at different steps {starts}; train them one by one")
    start, total = starts[0], int(config.train.steps)
    logging.info("training seeds %s together (vmap) from step %d", [int(c.seed) for c in configs], start)
    task = run.exp.task
    train_fn = pmapped_vmapped_train_step(task=task, learning_rate_fn=run.exp.learning_rate_fn)
    streams = [data.train_batches(run.dataset, global_batch_size=config.train.batch_size, seed=int(cfg.seed),
                                  start_step=start, num_local_devices=jax.local_device_count(),
                                  process_index=jax.process_index(), process_count=jax.process_count(),
                                  example_map=task.train_example_map()) for cfg in configs]
    keys = np.stack([np.asarray(jax.random.PRNGKey(int(cfg.seed) + 1)) for cfg in configs])
    rstate = steps.replicate(jax.tree_util.tree_map(lambda *x: np.stack(x), *[o.state for o in opened]))
    best = [o.best for o in opened]
    last_good = [start] * len(configs)
    results: list = [None] * len(configs)
    pending: list = []
    try:
        for step in range(start + 1, total + 1):
            batches = [next(stream) for stream in streams]
            rstate, m = train_fn(rstate, {k: np.stack([b[k] for b in batches], axis=1) for k in task.train_keys},
                                 keys)
            pending.append((step, m))
            due = [ev for ev in run.evaluators if loop._due(step, ev.every, total)]
            save_now = loop._due(step, config.train.checkpoint_every, total)
            if loop._due(step, config.train.log_every, total) or due or save_now:
                for s, (o, w) in enumerate(zip(opened, workdirs)):
                    loop._flush_train_metrics([(k, _seed_slice(v, s)) for k, v in pending], writer=o.writer,
                                              last_good_step=last_good[s], workdir=w)
                pending.clear()
            for s, (o, w) in enumerate(zip(opened, workdirs)):
                state = _seed_slice(rstate, s)
                is_best = False
                if due:
                    results[s] = loop._evaluate_all(due, state, dataset=run.dataset)
                    for result in results[s]:
                        loop._log_result(o.writer, step, result, w)
                        if config.train.best_metric in result.scalars:
                            value = result.scalars[config.train.best_metric]
                            is_best = o.ckpts.is_better(value, best[s])
                            best[s] = value if is_best else best[s]
                if save_now or is_best:
                    meta = loop.checkpoint_meta(best=best[s], step=step, config=config, run=run)
                    o.ckpts.save(unreplicate_to_host(state), meta=meta, is_best=is_best)
                    last_good[s] = step
        for s in range(len(configs)):
            if results[s] is None:  # resumed at the end
                results[s] = loop._evaluate_all(run.evaluators, _seed_slice(rstate, s), dataset=run.dataset)
    finally:
        _close(opened)
    out = []
    for s, w in enumerate(workdirs):
        scalars, definitions = loop._merged(results[s])
        if jax.process_index() == 0:
            loop._write_results(scalars, definitions, workdir=w, step=total)
        out.append(scalars)
    return out


def _close(opened: list) -> None:
    for o in opened:  # let the last good checkpoints finish writing
        o.ckpts.wait()
        o.ckpts.close()
        o.writer.close()
