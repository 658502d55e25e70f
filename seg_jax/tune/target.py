"""What `--mode=tune` searches: the `evals` entry, its metric, split and search space, checked against the config.

An entry's tunable options are named as in the config: a "crf" entry's own keys (`bilateral_srgb`, ...); for an
"instances" entry, `per_class` and the keys of its `options` (`seg_jax.postprocess.instances_from_semantic`'s
keywords). `options_of` reads them (with their defaults), `with_options` writes them: the one mapping between a
flat `{option: value}` and an entry, shared by the search and by eval / predict applying tuned values.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import re
from typing import Any, Mapping, Sequence

import ml_collections

from seg_jax.train.validate import ConfigError
from seg_jax.tune import config as tune_config

KINDS = ("crf", "instances")
DEFAULT_METRIC = {"crf": "mean_iou", "instances": "dsb"}
# Options that are not the post-processing's: what the metric measures, the test-time augmentation of its input.
NOT_TUNABLE = ("boundary_width", "tta")


def instance_defaults() -> dict[str, Any]:
    """`instances_from_semantic`'s keyword options with their defaults, and `per_class` (False)."""
    from seg_jax.postprocess import instances_from_semantic
    parameters = inspect.signature(instances_from_semantic).parameters
    return {"per_class": False, **{k: p.default for k, p in parameters.items() if p.kind is p.KEYWORD_ONLY}}


def crf_defaults() -> dict[str, Any]:
    from seg_jax.evaluators import CRFEvaluator
    return {k: v for k, v in CRFEvaluator.OPTIONS.items() if k not in NOT_TUNABLE}


def option_defaults(kind: str) -> dict[str, Any]:
    """Every tunable option of an entry of type `kind` with its default."""
    return crf_defaults() if kind == "crf" else instance_defaults()


def _plain(value: Any) -> dict:
    value = value.to_dict() if hasattr(value, "to_dict") else value
    return dict(value or {})


def options_of(entry: Mapping[str, Any], *, kind: str) -> dict[str, Any]:
    """The tunable options of `entry` (an `evals` entry of type `kind`), defaults filled in."""
    entry = _plain(entry)
    if kind == "crf":
        return {k: entry.get(k, v) for k, v in crf_defaults().items()}
    nested = _plain(entry.get("options"))
    return {k: entry.get(k, v) if k == "per_class" else nested.get(k, v) for k, v in instance_defaults().items()}


def with_options(entry: Mapping[str, Any], options: Mapping[str, Any], *, kind: str) -> dict[str, Any]:
    """`entry` (a plain dict copy) with `options` set: top-level keys for "crf" and `per_class`, the rest inside
    an "instances" entry's `options`."""
    entry = _plain(entry)
    if kind == "crf":
        return {**entry, **options}
    nested = {**_plain(entry.get("options")), **{k: v for k, v in options.items() if k != "per_class"}}
    top = {k: v for k, v in options.items() if k == "per_class"}
    return {**entry, **top, "options": nested}


def default_space(kind: str, options: Mapping[str, Any]) -> dict[str, list]:
    """The search space of an entry of type `kind` whose current options are `options` (`options_of`).

    "crf": the Potts weights, then the appearance kernel's colour and spatial widths, then the smoothness width.
    "instances": foreground threshold and min size; for the watershed also the marker choice ("interior" only
    with a border channel, "predicted_distance" only for an entry that reads a distance model's map) and the marker
    threshold, and for predicted-distance markers their peak height (normalised distance units).
    """
    if kind == "crf":
        return {"bilateral_compat": [3.0, 5.0, 10.0, 20.0], "gaussian_compat": [1.0, 3.0, 5.0],
                "bilateral_srgb": [3.0, 5.0, 13.0, 30.0], "bilateral_sxy": [20.0, 40.0, 80.0, 120.0],
                "gaussian_sxy": [1.0, 3.0, 5.0]}
    space: dict[str, list] = {}
    if options.get("method") == "watershed":
        border = options.get("border_index") is not None
        distance = "predicted_distance" in (options.get("markers"), options.get("elevation"))
        space["markers"] = ((["interior"] if border else []) + (["predicted_distance"] if distance else [])
                            + ["erosion", "distance_peaks"])
        space["marker_threshold"] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7] if distance else [0.3, 0.4, 0.5, 0.6, 0.7]
        if distance:
            space["peak_height"] = [0.0, 0.05, 0.1, 0.2, 0.3]
    space["foreground_threshold"] = [0.3, 0.4, 0.5, 0.6, 0.7]
    space["min_size"] = [0, 4, 8, 16, 32]
    return space


def is_test_split(split: str) -> bool:
    """Whether `split` reads a split named "test" (slices and `+` unions included: "test[:50%]", "val+test")."""
    return any(part.strip() == "test" for part in re.split(r"[+]", re.sub(r"\[[^\]]*\]", "", split)))


@dataclasses.dataclass(frozen=True)
class Target:
    """A checked tune section: entry (its name, type, config dict), metric, split, space, current options, search
    settings."""

    entry: str
    kind: str
    entry_config: dict
    metric: str
    split: str
    space: dict[str, list]
    current: dict[str, Any]
    search: str
    sweeps: int
    max_trials: int
    max_cache_gb: float


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str)) and not (
        isinstance(value, float) and not math.isfinite(value))


def _check_space(space: Any, *, kind: str, entry: str) -> dict[str, list]:
    space = _plain(space)
    valid = option_defaults(kind)
    for option, values in space.items():
        field = f"tune.space.{option}"
        if option not in valid:
            raise ConfigError(field, f"not a tunable option of evals.{entry} (type {kind!r}); valid: "
                                     f"{', '.join(sorted(valid))}")
        if not isinstance(values, (list, tuple)) or not values or not all(_scalar(v) for v in values):
            raise ConfigError(field, f"must be a non-empty list of values (numbers, strings, booleans, None), "
                                     f"got {values!r}")
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(field, f"lists a value twice: {list(values)!r}")
    return {k: list(v) for k, v in space.items()}


def _check_number(config: ml_collections.ConfigDict, key: str, *, low: float, integer: bool) -> None:
    value = config.tune.get(key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= low and (
        not integer or isinstance(value, int))
    if not ok:
        raise ConfigError(f"tune.{key}", f"must be {'an integer' if integer else 'a number'} >= {low:g}, "
                                         f"got {value!r}")


def resolve(config: ml_collections.ConfigDict, evaluators: Sequence[Any]) -> Target:
    """The checked tune section of `config` (with its `tune` defaults), given the run's built `evaluators`.

    Raises:
        ConfigError: naming the first bad `tune.*` field (unknown key, no entry to tune, an entry not of type
            "crf" / "instances", a metric the entry does not report, a test split without `allow_test`, a bad
            space or search setting).
    """
    tune = config.tune
    unknown = sorted(set(tune) - set(tune_config.base_config()))
    if unknown:
        raise ConfigError(f"tune.{unknown[0]}", f"unknown tune option; valid: "
                                                f"{', '.join(sorted(tune_config.base_config()))}")
    entries = {name: _plain(e) for name, e in (config.get("evals", None) or {}).items()}
    tunable = [name for name, e in entries.items() if e.get("type") in KINDS]
    name = tune.entry
    if name is None:
        if not tunable:
            raise ConfigError("tune.entry", "config.evals has no entry of type 'crf' or 'instances' to tune; add "
                                            "one (e.g. experiments/default.py:crf) or set tune.entry")
        name = tunable[0]
    if name not in tunable:
        raise ConfigError("tune.entry", f"{name!r} is not an evals entry of type 'crf' or 'instances'; those are: "
                                        f"{', '.join(tunable) or 'none'}")
    kind = entries[name]["type"]
    evaluator = next(ev for ev in evaluators if ev.name == name)
    metric = tune.metric or f"{name}/{DEFAULT_METRIC[kind]}"
    valid = [f"{name}/{n}" for n in evaluator.scalar_names()]
    if metric not in valid:
        raise ConfigError("tune.metric", f"{metric!r} is not a scalar of evals.{name}; valid: "
                                         f"{', '.join(v for v in valid if v.count('/') == 1)} and per-class ones "
                                         f"such as {next((v for v in valid if v.count('/') > 1), '-')}")
    split = tune.split or evaluator.split
    if is_test_split(split) and not tune.allow_test:
        field = "tune.split" if tune.split else f"evals.{name}.split"
        raise ConfigError(field, f"{split!r} is a test split: post-processing tuned on it would overstate the "
                                 "test results. Tune on validation data (tune.split='validation', or a slice of "
                                 "train the model did not see), or set tune.allow_test=True")
    if tune.search not in tune_config.SEARCHES:
        raise ConfigError("tune.search", f"{tune.search!r} is not one of {', '.join(tune_config.SEARCHES)}")
    _check_number(config, "sweeps", low=1, integer=True)
    _check_number(config, "max_trials", low=1, integer=True)
    _check_number(config, "max_cache_gb", low=0, integer=False)
    current = options_of(entries[name], kind=kind)
    space = _check_space(tune.space, kind=kind, entry=name) or default_space(kind, current)
    return Target(entry=name, kind=kind, entry_config=entries[name], metric=metric, split=split, space=space,
                  current=current, search=tune.search, sweeps=int(tune.sweeps), max_trials=int(tune.max_trials),
                  max_cache_gb=float(tune.max_cache_gb))
