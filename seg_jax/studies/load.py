"""Reading a study directory: `study.json`, then each run's state, final scalars, definitions, learning curves
and config hash. Nothing here computes a statistic.

A study directory holds `study.json` (written by `seg_jax.studies.runner`) and one ordinary run directory per
arm × seed, `<arm>/seed<k>/`. A run is
    finished  `results.json` is there (and its step reaches `train.steps` of the run's `config.json`),
    failed    otherwise, when `failed.txt` (the error the runner caught) is there,
    missing   otherwise (no directory, or a run that has not ended).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import subprocess
import warnings
from typing import Any, Sequence

import numpy as np

from seg_jax.studies.spec import StudyError, split_term

FINISHED, FAILED, MISSING = "finished", "failed", "missing"
TRAIN_LOSS = "train/loss"
# Config keys that differ between the seeds of one arm, or only say where a run read or wrote files: left out of
# the config hash so that equal hashes mean "the same computation". Top-level keys:
UNHASHED_KEYS = ("seed", "name", "logging")  # logging: where the scalars go, not what they are
# ... and, at any depth, keys naming directories (`data.data_dir`, `data.cityscapes_manual_dir`, `workdir`).
UNHASHED_SUFFIX = "_dir"


@dataclasses.dataclass(frozen=True)
class Study:
    """What `study.json` records. `arms` maps arm name → its config overrides (opaque here), in study order."""

    directory: pathlib.Path
    name: str
    arms: dict[str, Any]
    seeds: tuple[int, ...]
    metrics: tuple[str, ...]
    per_class: tuple[str, ...]
    baseline: str
    curve_metric: str
    description: str
    commit: str | None
    contrasts: tuple[tuple[str, str], ...] = ()  # (a, b): the within-run difference a − b, tabulated as "a - b"
    # ((arm, scalar), (arm, scalar)): the paired difference first − second over seeds, across arms or scalars
    comparisons: tuple[tuple[tuple[str, str], tuple[str, str]], ...] = ()

    def run_dir(self, arm: str, seed: int) -> pathlib.Path:
        return self.directory / arm / f"seed{seed}"


@dataclasses.dataclass(frozen=True)
class Run:
    """One arm × seed. `reason` says why a run is not finished ("" when it is).

    scalars: the final flat scalars of `results.json` (`{"val/mean_iou": 0.49, ...}`), empty unless finished.
    definitions: {evaluator: {metric (no prefix): text}} from `results.json`.
    curves: {scalar name: (steps int `[T]`, values float `[T]`)} from `metrics.jsonl`, steps increasing.
    config_hash: `config_hash` of the run's `config.json`, None without one.
    commit: the code version its results.json records (`train.workdir.code_version`), None where it has none.
    """

    arm: str
    seed: int
    directory: pathlib.Path
    status: str
    reason: str
    scalars: dict[str, float]
    definitions: dict[str, dict[str, str]]
    curves: dict[str, tuple[np.ndarray, np.ndarray]]
    config_hash: str | None
    commit: str | None = None

    @property
    def label(self) -> str:
        return f"{self.arm}/seed{self.seed}"


def load_study(study_dir: str | pathlib.Path) -> Study:
    """Reads `study_dir/study.json`; a missing file or field raises `StudyError` naming it."""
    directory = pathlib.Path(study_dir)
    path = directory / "study.json"
    if not path.is_file():
        raise StudyError(f"{directory} is no study directory: it has no study.json")
    record = _read_json(path)
    required = ("name", "arms", "seeds", "metrics", "baseline")
    absent = [key for key in required if not record.get(key)]
    if absent:
        raise StudyError(f"{path} has no {', '.join(absent)}; study.json needs {', '.join(required)}")
    arms = dict(record["arms"])
    if record["baseline"] not in arms:
        raise StudyError(f"{path}: baseline {record['baseline']!r} is not an arm; arms: {', '.join(arms)}")
    contrasts = tuple((str(a), str(b)) for a, b in record.get("contrasts") or ())
    metrics = tuple(record["metrics"]) + tuple(contrast_name(a, b) for a, b in contrasts)
    comparisons = tuple(tuple(split_term(term, arms=list(arms), where=str(path)) for term in pair)
                        for pair in record.get("comparisons") or ())
    return Study(contrasts=contrasts, comparisons=comparisons, directory=directory, name=str(record["name"]),
                 arms=arms, seeds=tuple(int(s) for s in record["seeds"]), metrics=metrics,
                 per_class=tuple(record.get("per_class") or ()), baseline=str(record["baseline"]),
                 curve_metric=record.get("curve_metric") or metrics[0],
                 description=str(record.get("description") or ""), commit=record.get("commit") or None)


def contrast_name(a: str, b: str) -> str:
    """The name a within-run difference of two scalars is tabulated under (e.g. "val_crf/mean_iou - val/mean_iou")."""
    return f"{a} - {b}"


def load_run(study: Study, arm: str, seed: int) -> Run:
    """The run `arm`/seed`seed` of `study`: its state, and for a finished run its scalars and curves."""
    directory = study.run_dir(arm, seed)
    config = _read_json(directory / "config.json") if (directory / "config.json").is_file() else None
    digest = config_hash(config) if config is not None else None
    results = _read_json(directory / "results.json") if (directory / "results.json").is_file() else None
    steps = _configured_steps(config)
    if results is not None and (steps is None or int(results.get("step", 0)) >= steps):
        log = read_metrics_log(directory / "metrics.jsonl")
        curves = {name: metric_curve(log, name) for name in (TRAIN_LOSS, study.curve_metric)}
        scalars = {k: float(v) for k, v in results.get("scalars", {}).items()}
        scalars.update({contrast_name(a, b): scalars[a] - scalars[b] for a, b in study.contrasts
                        if a in scalars and b in scalars})
        return Run(arm=arm, seed=seed, directory=directory, status=FINISHED, reason="", scalars=scalars,
                   definitions=results.get("definitions", {}), curves=curves, config_hash=digest,
                   commit=results.get("commit") or None)
    status, reason = _unfinished_reason(directory, results=results, steps=steps)
    return Run(arm=arm, seed=seed, directory=directory, status=status, reason=reason, scalars={}, definitions={},
               curves={}, config_hash=digest)


def scalar(run: Run, name: str) -> float:
    """The final value of scalar `name` in a finished run; absent, a `StudyError` lists the run's scalars."""
    if name not in run.scalars:
        raise StudyError(f"run {run.label} ({run.directory / 'results.json'}) has no scalar {name!r}; "
                         f"its scalars: {', '.join(sorted(run.scalars))}")
    return run.scalars[name]


def per_class_names(runs: list[Run], prefix: str) -> list[str]:
    """The classes of `<prefix>/<class>` scalars in the finished `runs`, in order of first appearance."""
    classes = dict.fromkeys(key[len(prefix) + 1:] for run in runs for key in run.scalars
                            if key.startswith(prefix + "/"))
    if runs and not classes:
        prefixes = sorted({k.rsplit("/", 1)[0] for run in runs for k in run.scalars if k.count("/") >= 2})
        raise StudyError(f"per_class prefix {prefix!r}: no finished run has scalars {prefix}/<class>; "
                         f"prefixes with per-class scalars: {', '.join(prefixes) or 'none'}")
    return list(classes)


def read_metrics_log(path: pathlib.Path) -> list[dict]:
    """The records of a `metrics.jsonl` (none when absent); unparsable lines (a killed run's last one) are
    skipped with a warning naming the file and line."""
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            warnings.warn(f"{path}: line {number} is not JSON (a truncated write?); skipped", stacklevel=2)
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
        else:
            warnings.warn(f"{path}: line {number} has no 'step'; skipped", stacklevel=2)
    return records


def metric_curve(records: list[dict], name: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps int `[T]`, values float `[T]`) of scalar `name` over the `records` holding it; a step logged twice
    keeps its last value."""
    by_step = {int(r["step"]): float(r[name]) for r in records if name in r and r[name] is not None}
    steps = np.array(sorted(by_step), dtype=np.int64)
    return steps, np.array([by_step[s] for s in steps], dtype=np.float64)


def config_hash(config: dict[str, Any]) -> str:
    """First 12 hex digits of the sha256 of `config` as canonical JSON (sorted keys, no spaces), without the
    keys `UNHASHED_KEYS` (top level) and `*_dir` (any depth), and without a field added to configs after runs were
    saved while it holds the value that changes nothing (`workdir.ADDED_DEFAULTS`), so a run saved before it
    existed hashes as a new one with that value. A path component naming the run's own seed
    (`seed<k>`, as in `train.init_from="{study_workdir}/plain/seed{seed}"`) is hashed as `seed{seed}`, so the seeds
    of an arm that starts from the same seed's run of another arm agree."""
    # Imported here, not at the top: seg_jax.train imports JAX, which reading a study file alone does not need.
    from seg_jax.train.workdir import ADDED_DEFAULTS
    kept = _without_directories({k: v for k, v in config.items() if k not in UNHASHED_KEYS})
    kept = _without_added_defaults(kept, defaults=ADDED_DEFAULTS)
    if isinstance(config.get("seed"), int):
        kept = _seed_in_paths(kept, seed=config["seed"])
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def commits(study: Study, runs: Sequence[Run]) -> list[tuple[str, str]]:
    """[(commit, which runs it made)] over the finished runs that record one (results.json), one entry per distinct
    commit; runs without one fall back to study.json's commit (the last launch's), else `git rev-parse --short
    HEAD` in the current directory now, else "unknown" — each labelled with where it comes from."""
    finished = [run for run in runs if run.status == FINISHED]
    by_commit: dict[str, list[str]] = {}
    for run in finished:
        if run.commit:
            by_commit.setdefault(run.commit, []).append(run.label)
    entries = [(commit, f"all {len(labels)} finished runs" if len(labels) == len(finished) else
                f"runs {', '.join(labels)}") for commit, labels in by_commit.items()]
    unrecorded = [run.label for run in finished if not run.commit]
    if entries and not unrecorded:
        return entries
    who = "the finished runs" if not entries else f"runs {', '.join(unrecorded)}"
    if study.commit:
        return entries + [(study.commit, f"{who}: none recorded per run; study.json's (its last launch)")]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        out = None
    if out is not None and out.returncode == 0 and out.stdout.strip():
        return entries + [(out.stdout.strip(), f"{who}: not recorded; git HEAD of the current directory at "
                                               "aggregation time")]
    return entries + [("unknown", f"{who}: not recorded, and git gave none")]


def _without_directories(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_directories(v) for k, v in node.items()
                if not (k == "workdir" or k.endswith(UNHASHED_SUFFIX))}
    return node


def _without_added_defaults(node: dict, *, defaults: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in node.items():
        if isinstance(v, dict):
            v = _without_added_defaults(v, defaults=defaults, prefix=f"{prefix}{k}.")
            if not v:  # nothing but neutral added fields (or an empty dict, which has no flat key)
                continue
        elif f"{prefix}{k}" in defaults and v == defaults[f"{prefix}{k}"]:
            continue
        out[k] = v
    return out


def _seed_in_paths(node: Any, *, seed: int) -> Any:
    if isinstance(node, dict):
        return {k: _seed_in_paths(v, seed=seed) for k, v in node.items()}
    if isinstance(node, list):
        return [_seed_in_paths(v, seed=seed) for v in node]
    if isinstance(node, str) and "/" in node:
        return "/".join("seed{seed}" if part == f"seed{seed}" else part for part in node.split("/"))
    return node


def _configured_steps(config: dict | None) -> int | None:
    train = (config or {}).get("train")
    return int(train["steps"]) if isinstance(train, dict) and train.get("steps") is not None else None


def _unfinished_reason(directory: pathlib.Path, *, results: dict | None, steps: int | None) -> tuple[str, str]:
    failed = directory / "failed.txt"
    if failed.is_file():
        lines = [line.strip() for line in failed.read_text(errors="replace").splitlines() if line.strip()]
        last = lines[-1] if lines else "(empty failed.txt)"
        return FAILED, f"{_shorten(last)} (see {directory.name}/failed.txt)"
    if not directory.is_dir():
        return MISSING, "no run directory"
    if results is not None:
        return MISSING, f"results.json is at step {results.get('step')}, the config trains {steps} steps"
    log = read_metrics_log(directory / "metrics.jsonl")
    last = f"; last logged step {log[-1]['step']}" if log else ""
    return MISSING, f"no results.json (not ended or still running{last})"


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _read_json(path: pathlib.Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise StudyError(f"{path} is not valid JSON: {e}") from None
