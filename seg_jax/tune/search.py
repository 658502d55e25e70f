"""The searches over a post-processing's options: pure functions of a score function, deterministic.

`score(options) -> float` is called at most once per distinct combination (memoised) and higher is better; a NaN
score never wins. Ties keep the earlier trial, so the config's own options win unless something beats them.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Callable, Mapping

from absl import logging

Options = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Trial:
    """One evaluation: the searched options (every key of the space) and the metric's value."""

    options: Options
    score: float


def _key(options: Mapping[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in options.items()))


def _better(score: float, than: float) -> bool:
    return not math.isnan(score) and (math.isnan(than) or score > than)


class _Scorer:
    """`score` memoised, recording each new trial in order and stopping at `max_trials`."""

    def __init__(self, score: Callable[[Options], float], *, max_trials: int):
        self._score, self.max_trials = score, max_trials
        self.trials: list[Trial] = []
        self._seen: dict[tuple, float] = {}

    @property
    def exhausted(self) -> bool:
        return len(self.trials) >= self.max_trials

    def __call__(self, options: Options) -> float:
        key = _key(options)
        if key not in self._seen:
            value = float(self._score(dict(options)))
            self._seen[key] = value
            self.trials.append(Trial(options=dict(options), score=value))
            logging.info("trial %d: %s -> %.4f", len(self.trials),
                         ", ".join(f"{k}={v!r}" for k, v in options.items()), value)
        return self._seen[key]


def best(trials: list[Trial]) -> Trial:
    """The trial with the highest score, the earliest among equals (NaN scores lose)."""
    top = trials[0]
    for trial in trials[1:]:
        top = trial if _better(trial.score, top.score) else top
    return top


def coordinate_descent(score: Callable[[Options], float], *, start: Options, space: Mapping[str, list],
                       sweeps: int, max_trials: int) -> list[Trial]:
    """Coordinate search from `start` (values of every key of `space`): each option in `space` order is set to
    the best of its listed values, the others fixed at the best so far; up to `sweeps` passes, stopping after a
    pass that changes nothing or at `max_trials` evaluations. Returns the trials in evaluation order, `start`
    first."""
    scorer = _Scorer(score, max_trials=max_trials)
    current = dict(start)
    current_score = scorer(current)
    for sweep in range(sweeps):
        changed = False
        for option, values in space.items():
            for value in values:
                if scorer.exhausted:
                    logging.info("tune.max_trials=%d reached; keeping the best so far", max_trials)
                    return scorer.trials
                candidate = {**current, option: value}
                value_score = scorer(candidate)
                if _better(value_score, current_score):
                    current, current_score, changed = candidate, value_score, True
        if not changed:
            break
    return scorer.trials


def grid_size(space: Mapping[str, list]) -> int:
    return math.prod(len(v) for v in space.values())


def grid(score: Callable[[Options], float], *, start: Options, space: Mapping[str, list],
         max_trials: int) -> list[Trial]:
    """Every combination of `space`'s values (the first option varying slowest), after `start`.

    Raises:
        ValueError: the grid and `start` need more than `max_trials` evaluations.
    """
    combos = [dict(zip(space, values)) for values in itertools.product(*space.values())]
    needed = len({_key(c) for c in combos} | {_key(start)})
    if needed > max_trials:
        raise ValueError(f"the grid needs {needed} evaluations (the config's options included), more than "
                         f"max_trials={max_trials}; shorten tune.space or use the coordinate search")
    scorer = _Scorer(score, max_trials=max_trials)
    scorer(dict(start))
    for combo in combos:
        scorer(combo)
    return scorer.trials
