"""What a workdir holds besides checkpoints: the config, results, and the rules protecting them."""
from __future__ import annotations

import json
import pathlib
import subprocess

import ml_collections
from absl import logging

from seg_jax.data.config import augment_config


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# Keys that may change when a run is resumed: they do not change what is trained (evaluation, logging, pictures,
# checkpoint cadence, where data is read from, prediction settings). `train.steps` extends a run on its recorded LR schedule
# unless `train.schedule_steps` re-plans it. Each change is logged, old → new.
RESUMABLE_CHANGES = ("name", "train.steps", "train.schedule_steps", "train.log_every", "train.checkpoint_every",
                     "train.keep_checkpoints", "train.best_metric", "train.best_mode", "data.num_workers",
                     "data.prefetch", "data.cache_mb", "data.data_dir", "data.eval_split", "data.eval_size")
RESUMABLE_PREFIXES = ("evals.", "predict.", "tune.", "logging.")  # tune: post-processing search settings

# Keys that change what a trained model computes, or what its outputs are compared with: `--mode=eval` refuses a
# config that differs from the run's saved one in any of them (prefixes end with a dot). `data.version` is not
# one: a generator version keeps the classes, so evaluating on another is a zero-shot domain-shift check.
# `model.dtype` is one: a checkpoint evaluated in another compute dtype gives another computation's numbers.
# The optimiser's fields are not (evaluation restores the run's own optimiser state, `check_eval_config`), but
# resuming with other ones is refused.
MODEL_FIELDS = ("model.", "task", "crf_layer.", "data.name", "data.variant", "data.mean", "data.std",
                "data.targets", "data.border_width", "data.ignore_index", "data.folder.num_classes",
                "data.folder.class_names", "loss.distance", "loss.distance.")  # that term adds an output channel

# Fields added to every config after runs were saved, with the value that changes nothing: a saved config without
# one compares as if it had that value, so older runs resume and evaluate as before (data.augment: all off). Older
# runs decayed every parameter: resuming one with the new default `optimizer.decay_norm_and_bias=False` is refused
# (set it True). (An empty `optimizer.lr_multipliers` dict has no flat key at all.)
ADDED_DEFAULTS = {"init_seed": None, "model.pretrained": None, "model.pretrained_normalization": "imagenet", "model.freeze_bn": False,
                  "model.freeze_stages": 0, "model.dtype": "float32", "optimizer.decay_norm_and_bias": True,
                  "optimizer.frozen": [], "data.folder.intensity.method": None, "data.folder.intensity.low": None,
                  "data.folder.intensity.high": None, "data.version": None, "data.distance_target": None,
                  "data.cache_mb": 1024,  # speed only: any value computes the same
                  **{f"data.augment.{k}": v for k, v in _flatten(json.loads(augment_config().to_json())).items()}}


class FinishedRunError(RuntimeError):
    """The workdir already holds a finished run; retraining would overwrite its results."""


class ConfigMismatchError(ValueError):
    """Resuming a workdir with a config that computes something else."""


class NotARunError(FileNotFoundError):
    """The workdir holds no run (no config.json) where one is needed."""


def code_version() -> str | None:
    """The commit of the code that runs (`git describe --always --dirty`: "-dirty" marks uncommitted changes), None
    outside a git checkout. Recorded in each run's results.json so a table can say which code made each number."""
    root = pathlib.Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], cwd=root,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def config_to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(json.loads(config.to_json_best_effort()), indent=2, sort_keys=True)


def flat_config(config: ml_collections.ConfigDict) -> dict:
    """`config` as flat JSON values by dotted key (tuples as lists, as in `config.json`)."""
    return _flatten(json.loads(config_to_json(config)))


def saved_flat_config(workdir: pathlib.Path) -> dict | None:
    """The flat `config.json` of `workdir`, None without one."""
    saved = workdir / "config.json"
    return _flatten(json.loads(saved.read_text())) if saved.exists() else None


def _differences(old: dict, new: dict) -> list[str]:
    return sorted(k for k in set(old) | set(new)
                  if old.get(k, ADDED_DEFAULTS.get(k)) != new.get(k, ADDED_DEFAULTS.get(k)))


def _describe(keys: list[str], old: dict, new: dict) -> str:
    return "; ".join(f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in keys)


def check_config(config: ml_collections.ConfigDict, workdir: pathlib.Path, *, has_checkpoint: bool) -> dict | None:
    """Refuses to resume with a config that computes something else; logs the changes that may be made
    (`RESUMABLE_CHANGES`, `RESUMABLE_PREFIXES`), old → new. Returns the saved flat config (None without one).

    Raises:
        ConfigMismatchError: naming each changed field that changes what is trained.
    """
    old = saved_flat_config(workdir)
    if not has_checkpoint or old is None:
        return old
    new = flat_config(config)
    changed = _differences(old, new)
    refused = [k for k in changed if k not in RESUMABLE_CHANGES and not k.startswith(RESUMABLE_PREFIXES)]
    if refused:
        raise ConfigMismatchError(
            f"{workdir} holds a run made with another config ({_describe(refused, old, new)}). "
            f"Resume with the same config or choose another --workdir.")
    if changed:
        logging.info("resuming %s with changed settings that do not change what is trained: %s", workdir,
                     _describe(changed, old, new))
    return old


def check_finished(config: ml_collections.ConfigDict, workdir: pathlib.Path, *, step: int | None) -> None:
    """Refuses to retrain a finished run (a checkpoint at `train.steps` or later, and results)."""
    results = workdir / "results.json"
    if step is not None and step >= config.train.steps and results.exists():
        raise FinishedRunError(
            f"{workdir} already holds a finished run (step {step}, results in {results}). "
            f"Use --mode=eval to evaluate it again, raise --config.train.steps to train on (on the run's LR "
            f"schedule; --config.train.schedule_steps=N re-plans it over N steps), or choose another --workdir.")


def check_eval_config(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> ml_collections.ConfigDict:
    """Refuses to evaluate `workdir` with a config that changes what its model computes (`MODEL_FIELDS`);
    evaluation-only differences (evals.*, data.eval_split, data.eval_size, data_dir, training settings) are fine.

    Returns:
        The config to evaluate with: `config` with the run's own `optimizer` section, so that its state has the
        structure of the checkpoint's optimiser state (parameter groups add or remove optax states).

    Raises:
        ConfigMismatchError: naming each such field, saved → given.
    """
    old = saved_flat_config(workdir)
    if old is None:
        logging.warning("%s has no config.json; evaluating with the given config as it is", workdir)
        return config
    new = flat_config(config)
    refused = [k for k in _differences(old, new)
               if any(k == f or (f.endswith(".") and k.startswith(f)) for f in MODEL_FIELDS)]
    if refused:
        raise ConfigMismatchError(
            f"{workdir} was trained with another model or data config ({_describe(refused, old, new)}); "
            "evaluating it with these would report numbers of another computation. Leave out --config to use the "
            "run's own config.json, or change only evaluation settings (evals.*, data.eval_split, data.eval_size).")
    config = config.copy_and_resolve_references()
    with config.unlocked():
        config.optimizer = read_config(workdir).optimizer
    return config


def read_config(workdir: pathlib.Path) -> ml_collections.ConfigDict:
    """The run's saved `config.json` as a ConfigDict (lists where the config had tuples).

    Raises:
        NotARunError: `workdir` has no config.json.
    """
    saved = workdir / "config.json"
    if not saved.exists():
        raise NotARunError(f"{workdir} has no config.json (not a run directory?); pass --config")
    return ml_collections.ConfigDict(json.loads(saved.read_text()))


def write_config(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config_to_json(config))


def unique_path(path: pathlib.Path) -> pathlib.Path:
    """`path`, or `path` with a `_2`, `_3`… suffix when it exists, so nothing is overwritten."""
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}_{n}{path.suffix}")
    if candidate != path:
        logging.info("%s exists; writing %s instead", path, candidate)
    return candidate


def results_table(scalars: dict[str, float], definitions: dict[str, dict[str, str]], *, title: str) -> str:
    """Markdown of flat evaluator scalars: per evaluator its headline metrics (`<name>/<metric>`), then one table of
    its per-class metrics (`<name>/<metric>/<class>`: a row per class, a column per metric), then definitions."""
    lines = [f"## {title}", ""]
    for name in dict.fromkeys(key.split("/", 1)[0] for key in scalars):
        mine = {k.split("/", 1)[1]: v for k, v in scalars.items() if k.startswith(name + "/")}
        lines += [f"### {name}", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {_format(v)} |" for k, v in mine.items() if "/" not in k]
        per_class: dict[str, dict[str, float]] = {}
        for key, value in mine.items():
            if "/" in key:
                metric, cls = key.split("/", 1)
                per_class.setdefault(cls, {})[metric] = value
        if per_class:
            columns = list(dict.fromkeys(m for row in per_class.values() for m in row))
            lines += ["", "| class | " + " | ".join(columns) + " |", "|" + " --- |" * (len(columns) + 1)]
            lines += [f"| {cls} | " + " | ".join(_format(row.get(m, float("nan"))) for m in columns) + " |"
                      for cls, row in per_class.items()]
        if definitions.get(name):
            lines += ["", "Definitions:", ""] + [f"- {k}: {v}" for k, v in definitions[name].items()]
        lines.append("")
    return "\n".join(lines)


def _format(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) >= 1 else f"{value:.4f}"
