"""A study's runs → its tables and plots, every number computed from the run directories.

    from seg_jax.studies.aggregate import aggregate
    aggregate("runs/studies/imbalance")   # -> runs/studies/imbalance/results.md

writes into the study directory `results.csv` (one row per arm × metric), `comparisons.csv` (one row per entry
of the study's `comparisons`, when it has any), `results.md` and `results.tex` (the same numbers with their notes:
definitions, seeds, commit, config hashes, runs that did not finish) and `plots/` (`bars_<metric>.png`,
`curves.png`). Only finished runs enter a statistic; the others are listed.
"""
from __future__ import annotations

import dataclasses
import pathlib

from seg_jax.studies import load, plots, stats, tables


@dataclasses.dataclass(frozen=True)
class Row:
    """One arm × metric: `summary` is `stats.summarize` over its finished seeds, `diff` is `stats.paired` against
    the baseline (None for the baseline itself)."""

    arm: str
    metric: str
    summary: dict
    diff: dict | None


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One of the study's `comparisons`: `first` − `second`, each (arm, scalar), paired by seed. `summaries` are
    `stats.summarize` of the two over their finished seeds, `diff` is `stats.paired` of first against second."""

    first: tuple[str, str]
    second: tuple[str, str]
    summaries: tuple[dict, dict]
    diff: dict

    @staticmethod
    def label(term: tuple[str, str]) -> str:
        return ":".join(term)


@dataclasses.dataclass(frozen=True)
class Definition:
    """What scalar `name` (`<evaluator>/<metric>`) means; `arms` lists the arms it holds for when the runs of the
    study disagree on the text (None: every finished run says the same)."""

    name: str
    text: str
    arms: tuple[str, ...] | None


@dataclasses.dataclass(frozen=True)
class StudyResults:
    """Everything the outputs show. rows: arms in study order, then metrics in study order; comparisons: the
    study's, in its order.

    per_class: {prefix: {class: {arm: stats.summarize dict}}}.
    config_hashes: {arm: {seed: hash}} over the runs that have a config.json.
    commits: [(commit, which runs it made)], `load.commits`.
    """

    study: load.Study
    runs: tuple[load.Run, ...]
    rows: tuple[Row, ...]
    per_class: dict[str, dict[str, dict[str, dict]]]
    definitions: tuple[Definition, ...]
    config_hashes: dict[str, dict[int, str]]
    commits: list[tuple[str, str]]
    comparisons: tuple[Comparison, ...] = ()

    def finished(self, arm: str | None = None) -> list[load.Run]:
        return [r for r in self.runs if r.status == load.FINISHED and arm in (None, r.arm)]

    def unfinished(self) -> list[load.Run]:
        return [r for r in self.runs if r.status != load.FINISHED]


def aggregate(study_dir: str | pathlib.Path) -> pathlib.Path:
    """Reads the study in `study_dir`, writes its tables and plots there; returns the path of `results.md`."""
    return write_outputs(collect(study_dir))


def collect(study_dir: str | pathlib.Path) -> StudyResults:
    """Reads `study.json` and every run and computes the statistics (writes nothing).

    A metric or per-class prefix of study.json that a finished run lacks raises `StudyError` naming both.
    """
    study = load.load_study(study_dir)
    runs = tuple(load.load_run(study, arm, seed) for arm in study.arms for seed in study.seeds)
    finished = [r for r in runs if r.status == load.FINISHED]
    values = {(arm, metric): _seed_values(finished, arm, metric) for arm in study.arms for metric in study.metrics}
    rows = tuple(
        Row(arm=arm, metric=metric, summary=stats.summarize(values[arm, metric].values()),
            diff=None if arm == study.baseline else stats.paired(values[arm, metric], values[study.baseline, metric]))
        for arm in study.arms for metric in study.metrics)
    per_class = {
        prefix: {cls: {arm: stats.summarize(_seed_values(finished, arm, f"{prefix}/{cls}").values())
                       for arm in study.arms}
                 for cls in load.per_class_names(finished, prefix)}
        for prefix in study.per_class}
    comparisons = []
    for first, second in study.comparisons:
        a, b = _seed_values(finished, *first), _seed_values(finished, *second)
        comparisons.append(Comparison(first=first, second=second, diff=stats.paired(a, b),
                                      summaries=(stats.summarize(a.values()), stats.summarize(b.values()))))
    hashes: dict[str, dict[int, str]] = {arm: {} for arm in study.arms}
    for run in runs:
        if run.config_hash is not None:
            hashes[run.arm][run.seed] = run.config_hash
    return StudyResults(study=study, runs=runs, rows=rows, per_class=per_class,
                        definitions=tuple(metric_definitions(study, finished)), config_hashes=hashes,
                        commits=load.commits(study, runs), comparisons=tuple(comparisons))


def write_outputs(results: StudyResults) -> pathlib.Path:
    """Writes results.csv / .md / .tex and plots/ of `results` into its study directory; returns results.md."""
    directory = results.study.directory
    plots.write_plots(results, directory=directory / "plots")
    (directory / "results.csv").write_text(tables.csv_text(results))
    if results.comparisons:
        (directory / "comparisons.csv").write_text(tables.comparisons_csv_text(results))
    else:  # a comparison dropped from the study leaves no stale table
        (directory / "comparisons.csv").unlink(missing_ok=True)
    (directory / "results.tex").write_text(tables.latex(results))
    md = directory / "results.md"
    md.write_text(tables.markdown(results, plots_dir="plots"))
    return md


def metric_definitions(study: load.Study, runs: list[load.Run]) -> list[Definition]:
    """The `results.json` definitions that concern the study's metrics and per-class prefixes, plus each used
    evaluator's general notes (keys naming no scalar, e.g. `ignore_index`), in the runs' order.

    A key matches a reported scalar `<evaluator>/<metric>[/...]` when one of its comma-separated parts, up to a
    `/`, is `<metric>` (so `"iou/<class>, dice/<class>"` defines `val/iou`).
    """
    wanted: dict[str, set[str]] = {}
    for name in study.metrics + study.per_class:
        evaluator, _, rest = name.partition("/")
        wanted.setdefault(evaluator, set()).add(rest.split("/")[0])
    texts: dict[str, dict[str, list[str]]] = {}  # "<evaluator>/<key>" -> text -> arms
    for run in runs:
        for evaluator, entries in run.definitions.items():
            if evaluator not in wanted:
                continue
            reported = {k.split("/")[1] for k in run.scalars if k.startswith(evaluator + "/")}
            for key, text in entries.items():
                stems = _definition_stems(key)
                if stems & wanted[evaluator] or not stems & reported:
                    arms = texts.setdefault(f"{evaluator}/{key}", {}).setdefault(str(text), [])
                    if run.arm not in arms:
                        arms.append(run.arm)
    return [Definition(name=name, text=text, arms=None if len(by_text) == 1 else tuple(arms))
            for name, by_text in texts.items() for text, arms in by_text.items()]


def _definition_stems(key: str) -> set[str]:
    return {part.strip().split("/")[0] for part in key.split(",") if part.strip()}


def _seed_values(finished: list[load.Run], arm: str, name: str) -> dict[int, float]:
    return {run.seed: load.scalar(run, name) for run in finished if run.arm == arm}
