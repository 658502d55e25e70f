"""The training loop and stand-alone evaluation, in short named functions.

The loop knows tasks and evaluators only through their interfaces: it trains `task.loss` with the one train step,
runs each evaluator of `config.evals` when due, and writes whatever scalars and pictures they return.
"""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Any, Iterator

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import jax_utils
from PIL import Image

from seg_jax import data, evaluators as evals
from seg_jax.train import steps, workdir as wd
from seg_jax.train.checkpoints import Checkpoints
from seg_jax.train.experiment import Experiment, build_experiment
from seg_jax.train.state import TrainState, create_train_state, unreplicate_to_host
from seg_jax.train.writers import MetricWriter


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the run stops without saving the broken state."""


@dataclasses.dataclass
class Run:
    """What one run is made of, resolved once from its config."""

    dataset: Any
    exp: Experiment
    evaluators: list
    state: TrainState


def build_run(config: ml_collections.ConfigDict) -> Run:
    """Resolves the dataset once, builds task, optimiser and evaluators, checks `train.best_metric`.

    Raises:
        KeyError / ValueError naming the config field: unknown names, options, splits or best metric.
    """
    dataset = data.resolve(config.data)
    method = config.get("class_weights", None)
    class_weights = dataset.class_weights(method) if method else None
    if class_weights is not None:
        logging.info("class weights (%s): %s", method, np.round(class_weights, 4).tolist())
    exp = build_experiment(config, num_classes=dataset.num_classes, class_weights=class_weights)
    evaluators = evals.build_evaluators(config, task=exp.task, class_names=dataset.class_names)
    for evaluator in evaluators:
        evaluator.validate(dataset)
    names = evals.scalar_names(evaluators)
    if config.train.best_metric not in names:
        headline = [n for n in names if n.count("/") == 1]
        raise KeyError(f"config.train.best_metric {config.train.best_metric!r} is not a scalar of the configured "
                       f"evaluators (config.evals); valid: {', '.join(headline)} and per-class ones such as "
                       f"{next((n for n in names if n.count('/') > 1), '-')}")
    state = create_train_state(init_model=exp.init_model, apply_model=exp.task.model, tx=exp.tx, seed=config.seed,
                               image_shape=tuple(config.data.crop_size))
    return Run(dataset=dataset, exp=exp, evaluators=evaluators, state=state)


def _log_result(writer: MetricWriter, step: int, result: evals.EvalResult, workdir: pathlib.Path) -> None:
    headline = {k: v for k, v in result.scalars.items() if k.count("/") == 1}
    logging.info("eval %s step %d: %s", result.name, step,
                 ", ".join(f"{k.split('/', 1)[1]} {v:.4f}" for k, v in headline.items()))
    writer.scalars(step, result.name, result.scalars)
    if writer.enabled:
        for name, picture in result.pictures.items():
            path = workdir / "pictures" / f"{result.name}_{name}_step{step}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(picture).save(path)
            writer.image(step, f"{result.name}/{name}", picture)


def _flush_train_metrics(pending: list, *, writer: MetricWriter, last_good_step: int, workdir: pathlib.Path) -> None:
    """Fetches queued step metrics, stops on the first non-finite loss, logs the newest."""
    for step, m in pending:
        m = unreplicate_to_host(m)
        if not math.isfinite(float(m["loss"])):
            raise NonFiniteLossError(
                f"loss is {float(m['loss'])} at step {step}; stopped without saving. The last good checkpoint "
                f"(step {last_good_step}) in {workdir / 'checkpoints'} is intact.")
    if pending:
        step, m = pending[-1]
        record = {k: float(v) for k, v in unreplicate_to_host(m).items()}
        writer.progress(step, record)
        writer.scalars(step, "train", {f"train/{k}": v for k, v in record.items()})
    pending.clear()


def _due(step: int, every: int, total: int) -> bool:
    return step == total or (every > 0 and step % every == 0)


def _evaluate_all(evaluators: list, rstate, *, dataset) -> list[evals.EvalResult]:
    return [ev.run(rstate, dataset=dataset) for ev in evaluators]


def _merged(results: list[evals.EvalResult]) -> tuple[dict[str, float], dict[str, dict[str, str]]]:
    scalars = {k: v for r in results for k, v in r.scalars.items()}
    return scalars, {r.name: r.definitions for r in results}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, float]:
    """Trains `config` in `workdir` (resuming from its latest checkpoint), evaluates, writes results.

    Returns the final evaluation's flat scalars (`{"val/mean_iou": ..., ...}`).
    """
    workdir = pathlib.Path(workdir)
    is_main = jax.process_index() == 0
    run = build_run(config)
    ckpts = Checkpoints(workdir, keep=config.train.keep_checkpoints, best_metric=config.train.best_metric,
                        best_mode=config.train.best_mode)
    start = ckpts.latest_step()
    wd.check_resume(config, workdir, latest_step=start)
    state, meta = run.state, {}
    if start is not None:
        state, meta = ckpts.restore(state)
        logging.info("resuming %s from step %d", workdir, start)
    start = start or 0
    if is_main:
        wd.write_config(config, workdir)
    total = int(config.train.steps)
    writer = MetricWriter(workdir, enabled=is_main, total_steps=total, resume_step=start)
    task = run.exp.task
    train_fn = steps.pmapped_train_step(task=task, learning_rate_fn=run.exp.learning_rate_fn)
    batches: Iterator[dict] = data.train_batches(
        run.dataset, global_batch_size=config.train.batch_size, seed=config.seed, start_step=start,
        num_local_devices=jax.local_device_count(), process_index=jax.process_index(),
        process_count=jax.process_count(), example_map=task.train_example_map())
    rng = jax.random.PRNGKey(config.seed + 1)
    rstate = jax_utils.replicate(state)
    try:
        results = _train_steps(rstate, range(start + 1, total + 1), batches=batches, train_fn=train_fn, rng=rng,
                               best=meta.get("best_value"), config=config, run=run, ckpts=ckpts, writer=writer,
                               workdir=workdir, last_good=start)
        if results is None:  # resumed at the end: evaluate what was restored
            results = _evaluate_all(run.evaluators, rstate, dataset=run.dataset)
    finally:  # also on errors: let the last good checkpoint finish writing
        ckpts.wait()
        ckpts.close()
        writer.close()
    scalars, definitions = _merged(results)
    if is_main:
        _write_results(scalars, definitions, workdir=workdir, step=total)
    return scalars


def _train_steps(rstate, steps_range, *, batches, train_fn, rng, best, config, run, ckpts, writer, workdir,
                 last_good) -> list[evals.EvalResult] | None:
    """Runs the steps of `steps_range`, evaluating and saving when due; returns the last step's results."""
    total = int(config.train.steps)
    best_name = config.train.best_metric
    keys = run.exp.task.train_keys
    pending: list = []
    results = None
    for step in steps_range:
        batch = next(batches)
        rstate, m = train_fn(rstate, {k: batch[k] for k in keys}, rng)
        pending.append((step, m))
        due = [ev for ev in run.evaluators if _due(step, ev.every, total)]
        save_now = _due(step, config.train.checkpoint_every, total)
        if _due(step, config.train.log_every, total) or due or save_now:
            _flush_train_metrics(pending, writer=writer, last_good_step=last_good, workdir=workdir)
        is_best = False
        if due:
            results = _evaluate_all(due, rstate, dataset=run.dataset)
            for result in results:
                _log_result(writer, step, result, workdir)
                if best_name in result.scalars:
                    value = result.scalars[best_name]
                    is_best = ckpts.is_better(value, best)
                    best = value if is_best else best
        if save_now or is_best:
            ckpts.save(unreplicate_to_host(rstate), meta={"best_value": best, "step": step}, is_best=is_best)
            last_good = step
    return results


def _write_results(scalars: dict, definitions: dict, *, workdir: pathlib.Path, step: int) -> None:
    results = workdir / "results.json"
    if results.exists():  # a run extended with more steps: keep the earlier results beside
        old_step = json.loads(results.read_text()).get("step")
        results.rename(workdir / f"results_step{old_step}.json")
        logging.info("kept the earlier results as results_step%s.json", old_step)
    results.write_text(json.dumps({"step": step, "scalars": scalars, "definitions": definitions}, indent=2,
                                  default=float))
    (workdir / "results.md").write_text(wd.results_table(scalars, definitions, title=f"step {step}"))
    logging.info("results: %s", results)


def evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *, split: str | None = None,
             which: str = "latest") -> dict[str, float]:
    """Evaluates the latest (or best) checkpoint of `workdir` with the evaluators of `config.evals` (on `split`
    instead of each one's own, when given).

    Writes `eval/<which>_step<N>[_<split>].json` / `.md` and pictures, never replacing earlier ones; returns the
    flat scalars.
    """
    workdir = pathlib.Path(workdir)
    run = build_run(config)
    if split is not None:
        run.evaluators = evals.build_evaluators(config, task=run.exp.task, class_names=run.dataset.class_names,
                                                split=split)
        for evaluator in run.evaluators:
            evaluator.validate(run.dataset)
    ckpts = Checkpoints(workdir, keep=config.train.keep_checkpoints, best_metric=config.train.best_metric,
                        best_mode=config.train.best_mode)
    try:
        state, _ = ckpts.restore(run.state, which=which)
    finally:
        ckpts.close()
    step = int(state.step)
    results = _evaluate_all(run.evaluators, jax_utils.replicate(state), dataset=run.dataset)
    scalars, definitions = _merged(results)
    if jax.process_index() == 0:
        stem = f"{which}_step{step}" + (f"_{evals.safe_name(split)}" if split else "")
        base = wd.unique_path(workdir / "eval" / f"{stem}.json")
        base.write_text(json.dumps({"step": step, "checkpoint": f"{which} step {step}", "scalars": scalars,
                                    "definitions": definitions}, indent=2, default=float))
        base.with_suffix(".md").write_text(wd.results_table(scalars, definitions, title=f"{which} step {step}"))
        for result in results:
            for name, picture in result.pictures.items():
                Image.fromarray(picture).save(base.with_name(f"{base.stem}_{result.name}_{name}.png"))
        for result in results:
            logging.info("eval %s (%s step %d): %s", result.name, which, step, ", ".join(
                f"{k.split('/', 1)[1]} {v:.4f}" for k, v in result.scalars.items() if k.count("/") == 1))
    return scalars


def check_data(config: ml_collections.ConfigDict):
    """Scans the training split and every evaluator's split of `config` (`--mode=check_data`).

    Returns the `data.DataReport`; a bad dataset raises `data.DataError` naming the split, example and problem.
    """
    dataset = data.resolve(config.data)
    splits = [config.data.train_split]
    for entry in (config.get("evals", None) or {}).values():
        split = entry.get("split", None) or config.data.eval_split
        splits += [split] if split not in splits else []
    return data.check_dataset(dataset, splits=splits)
