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
from PIL import Image

from seg_jax import data, evaluators as evals
from seg_jax.models import backbones
from seg_jax.train import steps, validate, workdir as wd
from seg_jax.train.checkpoints import Checkpoints, NoCheckpointError, open_for_reading, read_run_variables
from seg_jax.train.experiment import Experiment, build_experiment, with_schedule
from seg_jax.train.state import TrainState, create_train_state, restore_target, unreplicate_to_host
from seg_jax.train.writers import MetricWriter
from seg_jax.tune.tuned import apply_tuned


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the run stops without saving the broken state."""


@dataclasses.dataclass
class Run:
    """What one run is made of, resolved once from its config."""

    dataset: Any
    exp: Experiment
    evaluators: list
    state: TrainState


def build_run(config: ml_collections.ConfigDict, *, training: bool = True, split: str | None = None) -> Run:
    """Validates the whole config (`validate`), resolves the dataset once, builds task, optimiser and evaluators
    (on `split` instead of each one's own, when given). Writes nothing to any workdir.

    `training=False` (`--mode=eval`): skips what only training needs (train batch size and cadences, class
    weights, `train.best_metric`).

    Raises:
        validate.ConfigError: naming the field (sizes, divisibility, names, splits, eval image sizes, best metric).
    """
    validate.validate_config(config, num_devices=jax.local_device_count(), process_count=jax.process_count(),
                             training=training)
    dataset = validate.resolve_dataset(config)
    method = config.get("class_weights", None) if training else None
    class_weights = None
    if method:
        try:
            class_weights = dataset.class_weights(method)
        except (KeyError, ValueError) as e:
            raise validate.ConfigError("class_weights", str(e.args[0]) if e.args else str(e)) from None
        logging.info("class weights (%s): %s", method, np.round(class_weights, 4).tolist())
    exp = build_experiment(config, num_classes=dataset.num_classes, class_weights=class_weights)
    if split is not None:
        validate.check_split(dataset, split, "--split")
    evaluators = evals.build_evaluators(config, task=exp.task, class_names=dataset.class_names, split=split)
    validate.validate_with_dataset(config, dataset, evaluators, scalar_names=evals.scalar_names(evaluators),
                                   training=training)
    state = initial_state(config, exp, seed=init_seed(config), training=training)
    return Run(dataset=dataset, exp=exp, evaluators=evaluators, state=state)


def init_seed(config: ml_collections.ConfigDict) -> int:
    """The seed of the parameters' initialisation: `config.init_seed`, or `config.seed` when it is None (or absent,
    in configs saved before it existed)."""
    chosen = config.get("init_seed", None)
    return int(config.seed if chosen is None else chosen)


def initial_state(config: ml_collections.ConfigDict, exp: Experiment, *, seed: int,
                  training: bool = True) -> TrainState:
    """A new run's train state for `seed`: initialised, then `train.init_from`'s or `model.pretrained`'s weights
    loaded into it (a resumed run restores its own checkpoint over them). `training=False` (evaluation, tuning):
    `restore_target`'s zeros of the same structure, since a checkpoint is restored over them.

    Raises:
        validate.ConfigError: naming `train.init_from` / `model.pretrained` when their weights do not fit the model.
    """
    if not training:  # restored into: its values are never read
        return restore_target(init_model=exp.init_model, apply_model=exp.task.model, tx=exp.tx,
                              image_shape=tuple(config.data.crop_size))
    init_from = config.train.get("init_from", None)
    loaded = init_from_run(config) if init_from else pretrained_backbone(config, exp)
    try:
        return create_train_state(init_model=exp.init_model, apply_model=exp.task.model, tx=exp.tx, seed=seed,
                                  image_shape=tuple(config.data.crop_size), **loaded)
    except backbones.PretrainedWeightsError as e:
        if not init_from:
            raise
        raise validate.ConfigError("train.init_from", f"the run {init_from} does not fit this model: {e}") from None


def init_from_run(config: ml_collections.ConfigDict) -> dict:
    """`create_train_state`'s arguments for `train.init_from`: the newest checkpoint's parameters and BatchNorm
    statistics of that run (its optimiser state and step are not taken: the schedule starts anew). With
    `crf_layer.enabled` around a run trained without it, they go under the CRF wrapper's `backbone` and the Potts
    weights start at their init values: CRF-as-RNN fine-tuning as Zheng et al. did it.

    Raises:
        validate.ConfigError: on `train.init_from`: no readable checkpoint there.
    """
    path = config.train.init_from
    try:
        variables, step = read_run_variables(path)
    except NoCheckpointError as e:
        raise validate.ConfigError("train.init_from", str(e)) from None
    wrapped = bool(config.crf_layer.get("enabled", False)) and "crf" not in variables["params"]
    logging.info("starting from %s, step %d%s", path, step, " (under the CRF layer)" if wrapped else "")
    return {"backbone_variables": variables, "backbone_path": ("backbone",) if wrapped else ()}


def pretrained_backbone(config: ml_collections.ConfigDict, exp: Experiment) -> dict:
    """`create_train_state`'s backbone arguments for `config.model.pretrained` (none when it is None). A resumed
    run reads the file too, then restores its checkpoint over it; evaluation never reads it.

    Raises:
        validate.ConfigError: on `model.pretrained`: the file is missing, unreadable or does not fit the backbone.
    """
    path = config.model.get("pretrained", None)
    if not path:
        return {}
    try:
        loaded = backbones.load_pretrained(path, exp.backbone.name, **exp.backbone.options)
    except (FileNotFoundError, ValueError) as e:
        raise validate.ConfigError("model.pretrained", str(e)) from None
    logging.info("backbone %s: %d tensors from %s", exp.backbone.name, len(jax.tree.leaves(loaded)), path)
    return {"backbone_variables": loaded, "backbone_path": exp.backbone.path}


def _resumed_schedule(exp: Experiment, config: ml_collections.ConfigDict, *, meta: dict,
                      saved: dict | None) -> Experiment:
    """The schedule a resumed run continues on: `train.schedule_steps` when set, else the span recorded in its
    checkpoint (older checkpoints: the saved config's), so raising `train.steps` continues at the final LR."""
    recorded = meta.get("schedule_steps")
    if recorded is None and saved is not None:
        recorded = saved.get("train.schedule_steps") or saved.get("train.steps")
    if config.train.get("schedule_steps", None):
        if recorded and int(recorded) != exp.schedule_steps:
            logging.info("train.schedule_steps=%d: the learning-rate schedule is re-planned over %d steps (it "
                         "spanned %d)", exp.schedule_steps, exp.schedule_steps, recorded)
        return exp
    if recorded is None or int(recorded) == exp.schedule_steps:
        return exp
    exp = with_schedule(exp, config, total_steps=int(recorded))
    logging.info("train.steps=%d, and this run's learning-rate schedule spans %d steps: keeping it, so steps after "
                 "%d continue at its final learning rate %.3g (--config.train.schedule_steps=N re-plans the "
                 "schedule over N steps instead)", config.train.steps, recorded, recorded,
                 float(exp.learning_rate_fn(int(recorded))))
    return exp


def _resumed_best(meta: dict, config: ml_collections.ConfigDict, saved: dict | None) -> float | None:
    """The best value so far, unless `train.best_metric` / `best_mode` changed (then the best is chosen afresh)."""
    saved = saved or {}
    was = (meta.get("best_metric", saved.get("train.best_metric")), meta.get("best_mode", saved.get("train.best_mode")))
    now = (config.train.best_metric, config.train.best_mode)
    if meta.get("best_value") is not None and was != now:
        logging.info("best checkpoint: %s (%s) instead of %s (%s); the best is chosen afresh from now on", *now, *was)
        return None
    return meta.get("best_value")


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
    """Fetches the queued step metrics, stops on the first non-finite loss, and logs them at the newest step: each
    metric's mean over the queued steps (one batch of 8 is too noisy to read a curve from), `learning_rate` the
    newest step's."""
    records = []
    for step, m in pending:
        m = unreplicate_to_host(m)
        if not math.isfinite(float(m["loss"])):
            raise NonFiniteLossError(
                f"loss is {float(m['loss'])} at step {step}; stopped without saving. The last good checkpoint "
                f"(step {last_good_step}) in {workdir / 'checkpoints'} is intact.")
        records.append(m)
    if records:
        record = {k: float(np.mean([r[k] for r in records])) for k in records[-1]}
        if "learning_rate" in record:
            record["learning_rate"] = float(records[-1]["learning_rate"])
        step = pending[-1][0]
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


@dataclasses.dataclass
class Opened:
    """One run directory opened for training: its checkpoints, the (restored) state, the step it starts after,
    the best value so far and its metric writer."""

    ckpts: Checkpoints
    state: TrainState
    start: int
    best: float | None
    writer: MetricWriter


def open_workdir(config: ml_collections.ConfigDict, workdir: pathlib.Path, run: Run, *,
                 state: TrainState) -> Opened:
    """Resumes `workdir` from its newest readable checkpoint (or starts `state` fresh), after refusing a finished
    run or a config that computes something else; writes `config.json`; continues the recorded schedule
    (`run.exp` is updated when resumed)."""
    ckpts = Checkpoints(workdir, keep=config.train.keep_checkpoints, best_metric=config.train.best_metric,
                        best_mode=config.train.best_mode)
    saved = wd.check_config(config, workdir, has_checkpoint=bool(ckpts.steps()))
    restored = ckpts.restore_readable(state, move_unreadable=True)
    state, meta, start = restored if restored is not None else (state, {}, 0)
    wd.check_finished(config, workdir, step=start if restored is not None else None)
    if restored is not None:
        logging.info("resuming %s from step %d", workdir, start)
        run.exp = _resumed_schedule(run.exp, config, meta=meta, saved=saved)
        state = state.replace(tx=run.exp.tx)
    is_main = jax.process_index() == 0
    if is_main:
        wd.write_config(config, workdir)
    writer = MetricWriter(workdir, enabled=is_main, total_steps=int(config.train.steps), resume_step=start,
                          logging_cfg=config.get("logging", None), run_name=config.name,
                          run_config=wd.flat_config(config))
    return Opened(ckpts=ckpts, state=state, start=start, best=_resumed_best(meta, config, saved), writer=writer)


def checkpoint_meta(*, best: float | None, step: int, config: ml_collections.ConfigDict, run: Run) -> dict:
    """What a checkpoint records besides the state (JSON)."""
    return {"best_value": best, "step": step, "best_metric": config.train.best_metric,
            "best_mode": config.train.best_mode, "schedule_steps": run.exp.schedule_steps}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, float]:
    """Trains `config` in `workdir` (resuming from its latest checkpoint), evaluates, writes results.

    Returns the final evaluation's flat scalars (`{"val/mean_iou": ..., ...}`).
    """
    workdir = pathlib.Path(workdir)
    run = build_run(config)  # the whole config checked: nothing is written before this
    opened = open_workdir(config, workdir, run, state=run.state)
    start, total = opened.start, int(config.train.steps)
    task = run.exp.task
    train_fn = steps.pmapped_train_step(task=task, learning_rate_fn=run.exp.learning_rate_fn)
    batches: Iterator[dict] = data.train_batches(
        run.dataset, global_batch_size=config.train.batch_size, seed=config.seed, start_step=start,
        num_local_devices=jax.local_device_count(), process_index=jax.process_index(),
        process_count=jax.process_count(), example_map=task.train_example_map())
    rng = jax.random.PRNGKey(config.seed + 1)
    rstate = steps.replicate(opened.state)
    try:
        results = _train_steps(rstate, range(start + 1, total + 1), batches=batches, train_fn=train_fn, rng=rng,
                               best=opened.best, config=config, run=run, ckpts=opened.ckpts, writer=opened.writer,
                               workdir=workdir, last_good=start)
        if results is None:  # resumed at the end: evaluate what was restored
            results = _evaluate_all(run.evaluators, rstate, dataset=run.dataset)
    finally:  # also on errors: let the last good checkpoint finish writing
        opened.ckpts.wait()
        opened.ckpts.close()
        opened.writer.close()
    scalars, definitions = _merged(results)
    if jax.process_index() == 0:
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
            ckpts.save(unreplicate_to_host(rstate), meta=checkpoint_meta(best=best, step=step, config=config, run=run),
                       is_best=is_best)
            last_good = step
    return results


def _write_results(scalars: dict, definitions: dict, *, workdir: pathlib.Path, step: int) -> None:
    results = workdir / "results.json"
    if results.exists():  # a run extended with more steps: keep the earlier results beside
        old_step = json.loads(results.read_text()).get("step")
        results.rename(workdir / f"results_step{old_step}.json")
        logging.info("kept the earlier results as results_step%s.json", old_step)
    results.write_text(json.dumps({"step": step, "commit": wd.code_version(), "scalars": scalars,
                                   "definitions": definitions}, indent=2, default=float))
    (workdir / "results.md").write_text(wd.results_table(scalars, definitions, title=f"step {step}"))
    logging.info("results: %s", results)


def evaluate(config: ml_collections.ConfigDict | None, workdir: str | pathlib.Path, *, split: str | None = None,
             which: str = "latest", use_tuned: bool = True) -> dict[str, float]:
    """Evaluates the latest (or best) checkpoint of `workdir` with the evaluators of `config.evals` (on `split`
    instead of each one's own, when given).

    `config` None: the run's own `config.json`. A given config may differ from it only in what does not change
    what the model computes (`workdir.MODEL_FIELDS`): evaluators, `data.eval_split`, `data.eval_size`,
    `data.data_dir`, training settings. Nothing is created in a workdir that cannot be evaluated.

    `use_tuned`: entries with a tuned file (`<workdir>/tuned/<entry>.json`, `--mode=tune`) use its options
    (`seg_jax.tune.tuned.apply_tuned`); False (`--no_tuned`): the config's.

    Writes `eval/<which>_step<N>[_<split>][_data<version>].json` / `.md` (`_data<version>` when `data.version`
    differs from the run's own; recording in "postprocess" whether each crf / instances
    entry used tuned or config options, and which) and pictures `…_<evaluator>_<picture>.png`, never replacing
    earlier ones; returns the flat scalars.

    Raises:
        workdir.NotARunError: no config given and no `config.json`.
        workdir.ConfigMismatchError: a given config that changes what the model computes (names the fields).
        checkpoints.NoCheckpointError: no (readable) checkpoint of `which`.
        validate.ConfigError: a bad evaluation setting.
    """
    workdir = pathlib.Path(workdir)
    if config is None:
        config = wd.read_config(workdir)
    else:
        config = wd.check_eval_config(config, workdir)
    ckpts = open_for_reading(workdir, config, which=which, purpose="evaluate")
    try:
        config, postprocess = apply_tuned(config, workdir, use_tuned=use_tuned)
        run = build_run(config, training=False, split=split)
        state, _, step = ckpts.restore_readable(run.state, which=which)
    finally:
        ckpts.close()
    results = _evaluate_all(run.evaluators, steps.replicate(state), dataset=run.dataset)
    scalars, definitions = _merged(results)
    if jax.process_index() == 0:
        # Data of another generator version than the run's (a zero-shot check) is named in the file names.
        saved = wd.saved_flat_config(workdir) or {}
        version = run.dataset.version if config.data.get("version", None) != saved.get("data.version") else None
        _write_eval(results, scalars, definitions, workdir=workdir, step=step, stem=f"{which}_step{step}" + (
            f"_{evals.safe_name(split)}" if split else "") + (f"_data{version}" if version else ""),
            title=f"{which} step {step}" + (f", data version {version}" if version else ""), postprocess=postprocess)
    return scalars


def _write_eval(results, scalars, definitions, *, workdir: pathlib.Path, step: int, stem: str, title: str,
                postprocess: dict) -> None:
    base = wd.unique_path(workdir / "eval" / f"{stem}.json")
    base.write_text(json.dumps({"step": step, "checkpoint": title, "commit": wd.code_version(),
                                "scalars": scalars, "definitions": definitions, "postprocess": postprocess},
                               indent=2, default=float))
    used = [f"- {name}: {u['source']} options" + (f" ({u['file']})" if u["file"] else "") + ": " + ", ".join(
        f"{k}={v!r}" for k, v in u["options"].items()) for name, u in postprocess.items()]
    base.with_suffix(".md").write_text(wd.results_table(scalars, definitions, title=title) + (
        "\nPost-processing:\n\n" + "\n".join(used) + "\n" if used else ""))
    for result in results:
        for name, picture in result.pictures.items():
            Image.fromarray(picture).save(base.with_name(f"{base.stem}_{result.name}_{name}.png"))
    for result in results:
        logging.info("eval %s (%s): %s", result.name, title, ", ".join(
            f"{k.split('/', 1)[1]} {v:.4f}" for k, v in result.scalars.items() if k.count("/") == 1))


def check_data(config: ml_collections.ConfigDict):
    """Scans the training split and every evaluator's split of `config` (`--mode=check_data`).

    Returns the `data.DataReport`; a bad dataset raises `data.DataError` naming the split, example and problem,
    a bad config `validate.ConfigError` naming the field.
    """
    validate.validate_config(config, num_devices=jax.local_device_count(), process_count=jax.process_count(),
                             training=False)
    dataset = validate.resolve_dataset(config)
    splits = [config.data.train_split]
    for entry in (config.get("evals", None) or {}).values():
        split = entry.get("split", None) or config.data.eval_split
        splits += [split] if split not in splits else []
    return data.check_dataset(dataset, splits=splits)
