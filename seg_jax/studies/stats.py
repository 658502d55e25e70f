"""Statistics over seeds for ablation tables: one arm's mean, std and Student-t interval; the paired difference
of an arm and the baseline over the seeds both have, with its interval and the paired t-test's p-value.

Pure NumPy/SciPy on plain floats. Nothing is dropped silently: a NaN value (a metric undefined in that run)
makes the statistics it enters NaN, and too few values give NaN where a quantity is undefined.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np
from scipy import stats as scipy_stats

CONFIDENCE = 0.95  # the level of every interval written into the tables ("ci95")
NAN = float("nan")


def summarize(values: Iterable[float]) -> dict[str, float | int]:
    """Mean, std and 95 % Student-t confidence interval of the mean of `values` (one value per seed).

    values: floats `[n]`, in the metric's own units.
    Returns {"n", "mean", "std", "ci95_low", "ci95_high"}: std with ddof=1; the interval
    mean ± t_{0.975, n-1} · std / √n. n = 1: std and the interval are NaN; n = 0: all NaN.
    """
    x = np.asarray(list(values), dtype=np.float64).reshape(-1)
    n = int(x.size)
    if n == 0:
        return {"n": 0, "mean": NAN, "std": NAN, "ci95_low": NAN, "ci95_high": NAN}
    mean = float(np.mean(x))
    if n == 1:  # one seed says nothing about the spread
        return {"n": 1, "mean": mean, "std": NAN, "ci95_low": NAN, "ci95_high": NAN}
    std = float(np.std(x, ddof=1))
    half = _t_half_width(std, n)
    return {"n": n, "mean": mean, "std": std, "ci95_low": mean - half, "ci95_high": mean + half}


def paired(values: Mapping[int, float], baseline_values: Mapping[int, float]) -> dict[str, float | int]:
    """Paired comparison of an arm with the baseline over the seeds both have.

    values, baseline_values: {seed: value}; seeds only one of them has are left out (pairing is by seed).
    Returns {"n", "diff_mean", "diff_ci95_low", "diff_ci95_high", "p_value"}: n the number of pairs; the mean of
    the differences arm − baseline with its 95 % Student-t interval (n − 1 degrees of freedom); the two-sided
    p-value of the paired t-test (`scipy.stats.ttest_rel` semantics). n < 2: interval and p are NaN.
    Differences that are all equal have no spread: all zero gives p NaN (no evidence either way, as
    ttest_rel's 0/0), a non-zero constant gives p 0.0 (ttest_rel's infinite t) — without its warnings.
    """
    seeds = [seed for seed in values if seed in baseline_values]
    diffs = np.array([float(values[s]) - float(baseline_values[s]) for s in seeds], dtype=np.float64)
    s = summarize(diffs)
    return {"n": s["n"], "diff_mean": s["mean"], "diff_ci95_low": s["ci95_low"], "diff_ci95_high": s["ci95_high"],
            "p_value": _paired_p_value(diffs)}


def excludes_zero(low: float, high: float) -> bool:
    """Whether the interval [low, high] lies entirely on one side of 0 (False when undefined)."""
    return bool(np.isfinite(low) and np.isfinite(high) and (low > 0 or high < 0))


def _t_half_width(std: float, n: int) -> float:
    return float(scipy_stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * std / math.sqrt(n)


def _paired_p_value(diffs: np.ndarray) -> float:
    n = diffs.size
    if n < 2:
        return NAN
    mean, std = float(np.mean(diffs)), float(np.std(diffs, ddof=1))
    if std == 0.0:  # t = mean / 0: computed here so that no divide warning is raised
        return NAN if mean == 0.0 else 0.0
    t = mean / (std / math.sqrt(n))  # NaN inputs give NaN here and below, without warnings
    return float(2.0 * scipy_stats.t.sf(abs(t), n - 1))
