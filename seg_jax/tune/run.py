"""`tune`: the post-processing of one `evals` entry searched on a trained run's validation predictions.

The network's outputs do not change between trials, so they are computed once per batch and held on the host;
each trial builds the entry's own evaluator with the trial's options (so a trial computes exactly what
`--mode=eval` computes) around `ReplayTask`, which hands the stored outputs to the evaluator in place of the
network. Dense-CRF trials that differ only in the Potts weights (`CRFEvaluator.TRACED`) run one compiled function;
the other CRF options size it (static arguments of `dense_crf`), so each distinct set of those compiles once.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import flax
import jax
import ml_collections
import numpy as np
from absl import logging

from seg_jax import evaluators as evals
from seg_jax.predict.tta import tta_options, with_tta
from seg_jax.train import loop, steps, validate, workdir as wd
from seg_jax.train.checkpoints import open_for_reading
from seg_jax.train.validate import ConfigError
from seg_jax.tune import config as tune_config, search, target as tgt, tuned


@flax.struct.dataclass
class Replayed:
    """A "state" whose `variables` are the network's outputs of one batch: `{"logits": [D, b, H, W, N]}` and, for a
    model with a distance channel read by the entry, `"distance": [D, b, H, W]`."""

    variables: Any


class ReplayTask:
    """The run's task with its network replaced by outputs computed once: `predict(outputs, images)` returns the
    stored logits, `predict_outputs` all of them (an evaluator's `device_fn` calls `task.predict(state.variables,
    images)` or `task.predict_outputs`)."""

    def __init__(self, task: Any):
        self._task = task

    def predict(self, variables: Any, images: Any) -> Any:
        del images
        return variables["logits"]

    def predict_outputs(self, variables: Any, images: Any) -> Any:
        del images
        return variables

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)


@dataclasses.dataclass(frozen=True)
class TuneResult:
    """What `tune` found and wrote: `record` is the JSON written to `path` (`<workdir>/tuned/<entry>.json`)."""

    record: dict
    path: pathlib.Path

    @property
    def chosen(self) -> dict[str, Any]:
        return self.record["chosen"]


def cached_outputs(run: loop.Run, state, evaluator: evals.Evaluator, *, max_gb: float,
                   tta: dict[str, Any] | None = None) -> list[tuple[Replayed, dict]]:
    """`(Replayed(outputs), batch)` for every eval batch of `evaluator`'s split: the network run once, its logits
    float32 `[D, b, H, W, N]` (and the distance map of a distance model for an instances entry) on the host;
    through the test-time augmentation `tta` (the tuned entry's `seg_jax.predict.tta` option, None = off) when
    given, which the trial evaluators then do not repeat.

    Raises:
        ConfigError: on `tune.split` when the split's outputs would take more than `max_gb` GiB.
    """
    task = run.exp.task
    if isinstance(evaluator, evals.InstancesEvaluator) and getattr(task, "distance", False):
        # (an instances entry has no TTA option) every trial may read the distance map, whatever its markers
        predict = jax.pmap(task.predict_outputs)
    else:
        logits_fn = with_tta(task.predict, tta_options(tta, field="tta"))
        predict = jax.pmap(lambda v, images: {"logits": logits_fn(v, images)})
    variables = steps.replicate(state).variables
    examples = len(evaluator.dataset_for(run.dataset).source(evaluator.split))
    cached = []
    for batch in evaluator.batches(run.dataset):
        outputs = {k: np.asarray(v) for k, v in jax.device_get(predict(variables, batch["image"])).items()}
        if not cached:
            images = outputs["logits"].shape[0] * outputs["logits"].shape[1]
            need = sum(v.nbytes for v in outputs.values()) / images * examples / 2 ** 30
            if need > max_gb:
                raise ConfigError("tune.split", f"the network's outputs on {evaluator.split!r} ({examples} "
                                                f"images) take {need:.1f} GiB, over tune.max_cache_gb={max_gb:g}; "
                                                "tune on a slice (e.g. 'validation[:200]') or raise the limit")
        cached.append((Replayed(variables=outputs), batch))
    logging.info("network outputs of %d batch(es) of %s cached on the host (%.1f MiB)", len(cached),
                 evaluator.split, sum(v.nbytes for r, _ in cached for v in r.variables.values()) / 2 ** 20)
    return cached


def _trial_evaluator(run: loop.Run, target: tgt.Target, options: dict[str, Any], *,
                     config: ml_collections.ConfigDict) -> evals.Evaluator:
    entry = {**tgt.with_options(target.entry_config, options, kind=target.kind), "split": target.split,
             "num_pictures": 0}
    if "tta" in evals.EVALUATORS.get(target.kind).OPTIONS:
        entry["tta"] = None  # applied once, in `cached_outputs`
    return evals.EVALUATORS.get(target.kind)(target.entry, entry, task=ReplayTask(run.exp.task),
                                             class_names=run.dataset.class_names, data_cfg=config.data)


def _search(target: tgt.Target, score) -> list[search.Trial]:
    start = {k: target.current[k] for k in target.space}
    if target.search == "grid":
        try:
            return search.grid(score, start=start, space=target.space, max_trials=target.max_trials)
        except ValueError as e:
            raise ConfigError("tune.max_trials", str(e)) from None
    return search.coordinate_descent(score, start=start, space=target.space, sweeps=target.sweeps,
                                     max_trials=target.max_trials)


def search_table(record: dict) -> str:
    """Markdown of a tuned record: the setting, then one row per trial (the config's first, the chosen in bold)."""
    options = list(record["space"])
    lines = [f"## {record['entry']}: {record['metric']} on {record['split']}, {record['checkpoint']} step "
             f"{record['step']}", "",
             f"{record['search']} search over {len(record['trials'])} trial(s); config's options "
             f"{record['baseline']:.4f}, chosen {record['best']:.4f} ({record['best'] - record['baseline']:+.4f}).",
             "", "| trial | " + " | ".join(options) + f" | {record['metric']} |",
             "|" + " --- |" * (len(options) + 2)]
    chosen = search.best([search.Trial(t["options"], t["score"]) for t in record["trials"]])
    for i, trial in enumerate(record["trials"], start=1):
        name = "config" if i == 1 else str(i)
        cells = [str(trial["options"][k]) for k in options] + [f"{trial['score']:.4f}"]
        if trial["options"] == chosen.options:
            cells = [f"**{c}**" for c in cells]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def tune(config: ml_collections.ConfigDict | None, workdir: str | pathlib.Path, *, which: str = "latest",
         overwrite: bool = False) -> TuneResult:
    """Searches the post-processing options of `config.tune.entry` on the latest (or best) checkpoint of
    `workdir` (`seg_jax.tune.config` documents the settings) and writes `<workdir>/tuned/<entry>.json` and `.md`.

    `config` None: the run's own `config.json`; else as `seg_jax.train.evaluate` takes it. The search starts from
    the config's options (never from an earlier tuned file), whose score is the record's "baseline".

    Raises:
        tuned.TunedExistsError: the tuned file exists and not `overwrite` (checked before anything is computed).
        ConfigError: a bad `tune.*` (or evaluation) setting, naming the field.
        as `seg_jax.train.evaluate` (not a run, a mismatched config, no checkpoint).
    """
    workdir = pathlib.Path(workdir)
    if config is None:
        config = wd.read_config(workdir)
    else:
        config = wd.check_eval_config(config, workdir)
    config = tune_config.with_defaults(config.copy_and_resolve_references())
    ckpts = open_for_reading(workdir, config, which=which, purpose="tune")
    try:
        run = loop.build_run(config, training=False)
        target = tgt.resolve(config, run.evaluators)
        path = tuned.tuned_path(workdir, target.entry)
        if path.exists() and not overwrite:
            raise tuned.TunedExistsError(f"{path} exists (tuned at step {json.loads(path.read_text()).get('step')}); "
                                         "pass --overwrite (overwrite=True) to tune again")
        baseline_ev = _trial_evaluator(run, target, {}, config=config)
        validate.check_split(baseline_ev.dataset_for(run.dataset), target.split, "tune.split" if config.tune.split else
                             f"evals.{target.entry}.split")
        state, _, step = ckpts.restore_readable(run.state, which=which)
    finally:
        ckpts.close()
    cached = cached_outputs(run, state, baseline_ev, max_gb=target.max_cache_gb,
                            tta=dict(target.entry_config).get("tta", None))

    compiled: dict[tuple, evals.Evaluator] = {}  # trials that differ only in traced options compile once

    def score(options: dict[str, Any]) -> float:
        ev = _trial_evaluator(run, target, options, config=config)
        ev.share_compilation(compiled.setdefault(ev.static_key(), ev))
        return ev.run_batches(cached).scalars[target.metric]

    trials = _search(target, score)
    chosen = search.best(trials)
    record = {"entry": target.entry, "type": target.kind, "metric": target.metric, "split": target.split,
              "checkpoint": which, "step": int(step), "search": target.search, "space": target.space,
              "chosen": chosen.options, "baseline": trials[0].score, "best": chosen.score,
              "trials": [{"options": t.options, "score": t.score} for t in trials], "commit": wd.code_version()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))
    path.with_suffix(".md").write_text(search_table(record))
    logging.info("tuned %s: %s %.4f with the config's options, %.4f with %s; written to %s", target.entry,
                 target.metric, record["baseline"], record["best"],
                 ", ".join(f"{k}={v!r}" for k, v in chosen.options.items()), path)
    return TuneResult(record=record, path=path)
