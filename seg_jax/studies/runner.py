"""Runs a study: every arm × seed as an ordinary run in `WORKDIR/<arm>/seed<k>/`, then its tables and plots.

    python launch.py --study=experiments/studies/imbalance.py --workdir=runs/studies/imbalance
    python launch.py --study=... --study_parallel=2            # two runs at once
    python launch.py --study=... --study_only=ce,ce_dice       # some arms
    python launch.py --study=... --study_commands              # one launch.py line per run, for a scheduler
    python launch.py --study=... --study_run=ce/seed1          # one run (what those lines are)

Relaunching continues: finished runs (results.json at the configured step) are skipped, an interrupted one resumes
from its checkpoints, nothing is recomputed. A run that fails leaves `failed.txt` (its error) and the others go on;
the tables list it and never count it.
"""
from __future__ import annotations

import json
import os
import pathlib
import shlex
import subprocess
import sys
import time
import traceback
from typing import Sequence

import ml_collections
from absl import logging

from seg_jax.studies import spec as study_spec


def run_dir(workdir: str | pathlib.Path, arm: str, seed: int) -> pathlib.Path:
    return pathlib.Path(workdir) / arm / f"seed{int(seed)}"


def is_finished(directory: pathlib.Path, *, steps: int) -> bool:
    """Whether `directory` holds the results of a run trained to `steps`."""
    results = directory / "results.json"
    if not results.is_file():
        return False
    try:
        return int(json.loads(results.read_text()).get("step", -1)) >= steps
    except (json.JSONDecodeError, ValueError):
        return False


def parse_run(text: str) -> tuple[str, int]:
    """`"arm/seed3"` → ("arm", 3)."""
    arm, _, seed = text.partition("/")
    if not arm or not seed.startswith("seed") or not seed[4:].isdigit():
        raise study_spec.StudyError(f"--study_run must look like ARM/seed<k> (e.g. ce/seed0), got {text!r}")
    return arm, int(seed[4:])


def selected_runs(study: ml_collections.ConfigDict, *, only: Sequence[str] | None = None) -> list[tuple[str, int]]:
    """(arm, seed) of every run of the study, arms in study order (`only` keeps the named arms)."""
    unknown = sorted(set(only or ()) - set(study.arms))
    if unknown:
        raise study_spec.StudyError(f"--study_only names no arm of study {study.name!r}: {', '.join(unknown)}; "
                                    f"arms: {', '.join(study.arms)}")
    return [(arm, int(seed)) for arm in study.arms if not only or arm in only for seed in study.seeds]


def write_study_json(study: ml_collections.ConfigDict, workdir: pathlib.Path) -> None:
    """Records the study in `workdir/study.json`; a workdir holding another study is refused, naming the fields. A
    study may gain arms (an ablation added later runs beside the finished ones); the arms it had keep their
    overrides."""
    from seg_jax.train.workdir import code_version  # deferred: importing train loads JAX
    # through JSON, so that a tuple in an arm compares equal to the list a study.json read back holds
    record = json.loads(json.dumps(study_spec.as_json(study, commit=code_version())))
    path = workdir / "study.json"
    if path.is_file():
        old = json.loads(path.read_text())
        arms_kept = all(record["arms"].get(arm) == values for arm, values in old.get("arms", {}).items())
        changed = [k for k in ("name", "base", "common", "seeds", "metrics", "baseline") if old.get(k) != record[k]]
        changed += [] if arms_kept else ["arms"]
        if changed:
            raise study_spec.StudyError(f"{workdir} holds study {old.get('name')!r} with other {', '.join(changed)}; "
                                        "relaunch the same study or choose another --workdir")
        record["commit"] = old.get("commit") if old.get("commit") == record["commit"] else record["commit"]
    workdir.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"study.json.tmp{os.getpid()}")
    temporary.write_text(json.dumps(record, indent=2))
    os.replace(temporary, path)  # atomic: runs started by a scheduler may write it at once


def run_one(study: ml_collections.ConfigDict, arm: str, seed: int, workdir: str | pathlib.Path) -> bool:
    """Trains and evaluates one run (resuming it); on an error writes `failed.txt` there and returns False."""
    from seg_jax import train  # deferred: building studies needs no JAX
    config = study_spec.run_config(study, arm, seed, workdir=workdir)
    directory = run_dir(workdir, arm, seed)
    failed = directory / "failed.txt"
    if is_finished(directory, steps=int(config.train.steps)):
        logging.info("study %s: %s/seed%d is finished; skipped", study.name, arm, seed)
        return True
    failed.unlink(missing_ok=True)
    logging.info("study %s: running %s/seed%d in %s", study.name, arm, seed, directory)
    try:
        source = config.train.get("init_from", None)
        if study_spec.starts_from_arm(study, arm) and not (pathlib.Path(source) / "results.json").is_file():
            raise study_spec.StudyError(f"train.init_from: {source} has not finished (no results.json); its run "
                                        "must finish before this one starts from it")
        train.train_and_evaluate(config, directory)
    except Exception:  # one run failing must not stop the study: it is recorded and listed in the tables
        directory.mkdir(parents=True, exist_ok=True)
        failed.write_text(traceback.format_exc())
        logging.error("study %s: %s/seed%d failed; see %s", study.name, arm, seed, failed)
        return False
    return True


def entry_command() -> list[str]:
    """How a new process starts the command line (`seg_jax.cli`): launch.py in a checkout, `python -m seg_jax` in
    an installed copy."""
    launch = study_spec.PROJECT_ROOT / "launch.py"
    return [sys.executable, str(launch)] if launch.is_file() else [sys.executable, "-m", "seg_jax"]


def commands(spec: str, workdir: str | pathlib.Path, study: ml_collections.ConfigDict, *,
             only: Sequence[str] | None = None) -> list[str]:
    """One command line per run (each resumable on its own), for a scheduler's array job. Runs that start from another
    arm's runs (`train.init_from`) come after all others: start them when those have finished."""
    runs = selected_runs(study, only=only)
    later = [run for run in runs if study_spec.starts_from_arm(study, run[0])]
    return [command(spec, workdir, arm, seed) for arm, seed in [r for r in runs if r not in later] + later]


def command(spec: str, workdir: str | pathlib.Path, arm: str, seed: int) -> str:
    """The command line of one run of a study."""
    return shlex.join([*entry_command(), f"--study={spec}", f"--workdir={workdir}", f"--study_run={arm}/seed{seed}"])


def _run_in_subprocesses(lines: list[str], *, parallel: int) -> list[int]:
    """Runs command lines, `parallel` at once; their return codes in order."""
    running: list[tuple[int, subprocess.Popen]] = []
    codes = [0] * len(lines)
    queue = list(enumerate(lines))
    while queue or running:
        while queue and len(running) < parallel:
            index, line = queue.pop(0)
            running.append((index, subprocess.Popen(shlex.split(line))))
        for index, process in list(running):
            if process.poll() is not None:
                codes[index] = process.returncode
                running.remove((index, process))
        time.sleep(0.5)
    return codes


def _run_seeds_together(study: ml_collections.ConfigDict, workdir: pathlib.Path,
                        todo: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Each arm's pending seeds trained at once (`seg_jax.train.seeds`); the failed (arm, seed) pairs."""
    from seg_jax.train import seeds
    failures = []
    for arm in dict.fromkeys(a for a, _ in todo):
        group = [seed for a, seed in todo if a == arm]
        configs = [study_spec.run_config(study, arm, seed, workdir=workdir) for seed in group]
        directories = [run_dir(workdir, arm, seed) for seed in group]
        if len(group) < 2:
            failures += [(arm, seed) for seed in group if not run_one(study, arm, seed, workdir)]
            continue
        try:
            seeds.train_seeds(configs, directories)
        except seeds.SeedsApart as error:  # e.g. the runs stand at different steps: one by one
            logging.info("study %s: %s trained seed by seed (%s)", study.name, arm, error)
            failures += [(arm, seed) for seed in group if not run_one(study, arm, seed, workdir)]
        except Exception:  # recorded for every seed of the group, as run_one does for one
            for directory, seed in zip(directories, group):
                directory.mkdir(parents=True, exist_ok=True)
                (directory / "failed.txt").write_text(traceback.format_exc())
                failures.append((arm, seed))
    return failures


def run_study(spec: str, workdir: str | pathlib.Path, *, parallel: int = 1,
              only: Sequence[str] | None = None) -> pathlib.Path:
    """Runs every (selected) run of the study file `spec` not yet finished, then aggregates.

    Returns the path of the study's `results.md`.
    """
    from seg_jax.studies.aggregate import aggregate
    study = study_spec.load_study(spec)
    workdir = pathlib.Path(workdir)
    write_study_json(study, workdir)
    runs = selected_runs(study, only=only)
    todo = [(arm, seed) for arm, seed in runs
            if not is_finished(run_dir(workdir, arm, seed),
                               steps=int(study_spec.run_config(study, arm, seed).train.steps))]
    logging.info("study %s: %d runs, %d finished, %d to run", study.name, len(runs), len(runs) - len(todo), len(todo))
    later = [run for run in todo if study_spec.starts_from_arm(study, run[0])]
    todo = [run for run in todo if run not in later] + later  # fine-tuning runs after the runs it reads
    if study.get("vmap_seeds", False) and parallel <= 1:
        failures = _run_seeds_together(study, workdir, todo)
    elif parallel > 1 and len(todo) > 1:
        failures = []
        for wave in ([run for run in todo if run not in later], later):
            codes = _run_in_subprocesses([command(spec, workdir, *run) for run in wave], parallel=parallel)
            failures += [run for run, code in zip(wave, codes) if code]
    else:
        failures = [(arm, seed) for arm, seed in todo if not run_one(study, arm, seed, workdir)]
    if failures:
        logging.error("study %s: %d run(s) failed: %s", study.name, len(failures),
                      ", ".join(f"{a}/seed{s}" for a, s in failures))
    return aggregate(workdir)
