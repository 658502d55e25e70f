"""What a workdir holds besides checkpoints: the config, results, and the rules protecting them."""
from __future__ import annotations

import json
import pathlib

import ml_collections
from absl import logging

# Keys that may change when a run is resumed: they do not change what is computed.
RESUMABLE_CHANGES = ("train.steps", "train.log_every", "train.eval_every", "train.checkpoint_every",
                     "data.num_workers", "data.prefetch", "eval.num_pictures", "data.data_dir")


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
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES)
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


def results_table(record: dict, *, title: str) -> str:
    """Markdown table of an evaluation record: headline metrics, then per-class IoU and Dice."""
    lines = [f"## {title}", "", "| metric | value |", "| --- | --- |"]
    for key, value in record.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            lines.append(f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |")
    if "iou" in record:
        lines += ["", "| class | IoU | Dice |", "| --- | --- | --- |"]
        for name, iou in record["iou"].items():
            lines.append(f"| {name} | {iou:.4f} | {record['dice'][name]:.4f} |")
    for name in ("crf", "instances"):
        if name in record:
            lines += ["", f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in record[name].items()
                                                 if isinstance(v, float))]
    lines += ["", "Definitions:", ""] + [f"- {k}: {v}" for k, v in record["definition"].items()]
    return "\n".join(lines) + "\n"
