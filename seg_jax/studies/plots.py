"""A study's pictures: a bar chart per metric (mean and 95 % CI per arm) and the learning curves.

Figures are `matplotlib.figure.Figure` objects rendered by Agg: no pyplot, so no global backend or open-figure
state, and nothing to close (a figure is freed with its last reference).
"""
from __future__ import annotations

import math
import pathlib
import re
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from seg_jax.studies import load

if TYPE_CHECKING:
    from seg_jax.studies.aggregate import StudyResults

CURVES_FILE = "curves.png"
DPI = 120


def bars_file(metric: str) -> str:
    """File name of a metric's bar chart: `val/mean_iou` → `bars_val_mean_iou.png`."""
    return f"bars_{re.sub(r'[^A-Za-z0-9.-]+', '_', metric).strip('_') or 'metric'}.png"


def write_plots(results: StudyResults, *, directory: pathlib.Path) -> list[pathlib.Path]:
    """Writes `bars_<metric>.png` per study metric and `curves.png` into `directory`; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for metric in results.study.metrics:
        rows = [r for r in results.rows if r.metric == metric]
        paths.append(_save(bar_chart(metric, [r.arm for r in rows], [r.summary for r in rows],
                                     baseline=results.study.baseline), directory / bars_file(metric)))
    names = list(dict.fromkeys((load.TRAIN_LOSS, results.study.curve_metric)))
    curves = {arm: [run.curves for run in results.finished(arm)] for arm in results.study.arms}
    paths.append(_save(learning_curves(names, curves, baseline=results.study.baseline), directory / CURVES_FILE))
    return paths


def bar_chart(metric: str, arms: list[str], summaries: list[dict], *, baseline: str) -> Figure:
    """One bar per arm at its mean, error bars from its 95 % CI (none for a single seed), n under each name."""
    fig = Figure(figsize=(1.2 + 1.1 * len(arms), 3.6), layout="constrained")
    ax = fig.add_subplot()
    means = np.array([s["mean"] for s in summaries], dtype=np.float64)
    low = np.array([s["ci95_low"] for s in summaries], dtype=np.float64)
    high = np.array([s["ci95_high"] for s in summaries], dtype=np.float64)
    # matplotlib draws no bar for NaN; an undefined interval is drawn as no error bar
    errors = np.nan_to_num(np.stack([means - low, high - means]), nan=0.0)
    x = np.arange(len(arms))
    colours = arm_colours(arms, baseline=baseline)
    ax.bar(x, np.nan_to_num(means, nan=0.0), yerr=errors, capsize=4, color=colours, edgecolor="black")
    ax.set_xticks(x, [f"{arm}\n{_n_label(s)}" for arm, s in zip(arms, summaries)])
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: mean, 95 % CI over seeds", fontsize=10)
    return fig


def arm_colours(arms: list[str], *, baseline: str) -> list[str]:
    """One matplotlib colour per arm, the baseline grey, the same in every figure of a study."""
    return ["0.45" if arm == baseline else f"C{i}" for i, arm in enumerate(arms)]


def learning_curves(names: list[str], curves: dict[str, list[dict]], *, baseline: str) -> Figure:
    """One panel per scalar of `names` against step: per arm the mean over its seeds and a min–max band.

    curves: {arm: [one finished run's `Run.curves`]}.
    """
    fig = Figure(figsize=(5.0 * len(names), 3.8), layout="constrained")
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        drawn = False
        for colour, (arm, runs) in zip(arm_colours(list(curves), baseline=baseline), curves.items()):
            # a NaN logged value (a metric undefined at that step) is a gap in the curve
            series = [(s[np.isfinite(v)], v[np.isfinite(v)]) for s, v in (run[name] for run in runs if name in run)]
            series = [(s, v) for s, v in series if s.size]
            if not series:
                continue
            steps, mean, low, high = _over_seeds(series)
            ax.plot(steps, mean, color=colour, label=f"{arm} (mean of {len(series)})",
                    marker="o" if len(steps) <= 12 else None, markersize=3)  # a few evaluations: show the points
            ax.fill_between(steps, low, high, color=colour, alpha=0.2, linewidth=0)
            drawn = True
        if drawn:
            ax.legend(fontsize=8, title="band: min–max over seeds", title_fontsize=8)
        else:
            ax.text(0.5, 0.5, f"no {name} in the finished runs' metrics.jsonl", ha="center", va="center",
                    transform=ax.transAxes, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.set_title(name, fontsize=10)
    return fig


def _over_seeds(series: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
    """(steps `[T]`, mean, min, max `[T]`) over the union of the seeds' steps, each step over the seeds that
    logged it (a seed may log fewer steps)."""
    steps = np.unique(np.concatenate([s for s, _ in series]))
    table = np.full((len(series), steps.size), np.nan)
    for row, (s, v) in enumerate(series):
        table[row, np.searchsorted(steps, s)] = v
    counted = ~np.isnan(table)
    mean = np.where(counted, table, 0.0).sum(0) / counted.sum(0)  # every step has >= 1 value: no 0 / 0
    return (steps, mean, np.where(counted, table, np.inf).min(0), np.where(counted, table, -np.inf).max(0))


def _n_label(summary: dict) -> str:
    if summary["n"] == 0:
        return "no run"
    return f"n={summary['n']}" + (", no CI" if math.isnan(summary["ci95_low"]) else "")


def _save(fig: Figure, path: pathlib.Path) -> pathlib.Path:
    fig.savefig(path, dpi=DPI)
    return path
