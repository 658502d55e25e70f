"""What a workdir holds besides checkpoints: the config, results, and the rules protecting them."""
from __future__ import annotations

import json
import pathlib

import ml_collections
from absl import logging

# Keys that may change when a run is resumed: they do not change what is trained. Evaluation settings
# (`evals.*`) only change what is measured.
RESUMABLE_CHANGES = ("train.steps", "train.log_every", "train.checkpoint_every", "data.num_workers",
                     "data.prefetch", "data.data_dir")
RESUMABLE_PREFIXES = ("evals.",)


class FinishedRunError(RuntimeError):
    """The workdir already holds a finished run; retraining would overwrite its results."""


class ConfigMismatchError(ValueError):
    """Resuming a workdir with a config that computes something else."""


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(json.loads(config.to_json_best_effort()), indent=2, sort_keys=True)


def check_resume(config: ml_collections.ConfigDict, workdir: pathlib.Path, *, latest_step: int | None) -> None:
    """Refuses to retrain a finished run or to resume with a config that computes something else."""
    results = workdir / "results.json"
    if latest_step is not None and latest_step >= config.train.steps and results.exists():
        raise FinishedRunError(
            f"{workdir} already holds a finished run (step {latest_step}, results in {results}). "
            f"Use --mode=eval to evaluate it again, raise --config.train.steps to train on, "
            f"or choose another --workdir.")
    saved = workdir / "config.json"
    if latest_step is None or not saved.exists():
        return
    old = _flatten(json.loads(saved.read_text()))
    new = _flatten(json.loads(config_to_json(config)))
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES
                     and not k.startswith(RESUMABLE_PREFIXES))
    if changed:
        detail = "; ".join(f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in changed)
        raise ConfigMismatchError(
            f"{workdir} holds a run (step {latest_step}) made with another config ({detail}). "
            f"Resume with the same config or choose another --workdir.")


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
