"""Study files: a base config, named arms (config overrides), seeds, the metrics to tabulate, a baseline arm.

A study file `experiments/studies/<name>.py` has `get_study(arg=None) -> ConfigDict` with
    name          the study's name (run directories and tables)
    description   one paragraph: the claim the study tests
    base          "experiments/<file>.py[:arg]" — the config every arm starts from
    arms          {arm: {dotted.field: value}} — e.g. {"ce_dice": {"loss": {"cross_entropy": 1.0, "dice": 1.0}}};
                  a mapping value replaces the field whole; a field must exist in the base config, except new
                  entries directly under `evals` (adding an evaluator). The key `base` gives an arm its own
                  base config file (arms of different tasks, e.g. watershed vs Mask R-CNN)
    common        overrides applied to every arm before its own (e.g. {"train.steps": 750}), may be empty
    seeds         (0, 1, 2, ...) — `config.seed` of each run
    metrics       evaluator scalars to tabulate ("val/mean_iou", ...); checked against the arms' evaluators
    per_class     scalar prefixes with a per-class table ("val/iou"), may be empty
    contrasts     optional pairs (a, b) of scalars of one run, tabulated as the within-run difference "a - b"
                  (e.g. the same checkpoint with and without a CRF)
    comparisons   optional pairs ("arm:scalar", "arm:scalar"), tabulated as the paired difference first − second
                  over the seeds both finished, for what the baseline columns do not pair: two arms neither of
                  which is the baseline, or two scalars (e.g. ("crf_rnn_finetune:val/mean_iou",
                  "finetune:val_crf/mean_iou"))
    baseline      the arm every other is compared with (paired over seeds)
    curve_metric  the validation scalar of the learning curves (default: metrics[0])
    vmap_seeds    optional, default False: train an arm's seeds at once (`seg_jax.train.seeds`; slower than
                  separate runs on XLA:CPU, see there)
Building a study builds every arm's config, so a study naming a missing field fails its test, not a user.
"""
from __future__ import annotations

import copy
import importlib.util
import pathlib
import sys
from typing import Any, Mapping, Sequence

import ml_collections

OPEN_SECTIONS = ("evals",)  # sections whose entries an arm may add
# The folder holding `seg_jax` and `experiments`: the checkout, or site-packages for an installed copy.
PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[2]


class StudyError(ValueError):
    """A study file that cannot run; the message names the study, the arm or the field."""


def new_study(name: str, arg: str | None, *, args: tuple) -> ml_collections.ConfigDict:
    """An empty study named `name`, after checking that `arg` is one of the file's `args`."""
    if arg not in args:
        raise StudyError(f"unknown {name} argument {arg!r}; valid: {', '.join(a for a in args if a)}")
    study = ml_collections.ConfigDict()
    study.name = name
    return study


def overrides(values: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """`{dotted.field: value}` as a ConfigDict that keeps the dotted keys (`study.common`, one arm)."""
    return ml_collections.ConfigDict(dict(values), allow_dotted_keys=True, sort_keys=False)


def make_arms(arms: Mapping[str, Mapping[str, Any]]) -> ml_collections.ConfigDict:
    """`{arm: {dotted.field: value}}` as a ConfigDict that keeps the dotted keys and the arms' order (`study.arms`)."""
    return ml_collections.ConfigDict({arm: overrides(values) for arm, values in arms.items()}, allow_dotted_keys=True,
                                     sort_keys=False)


def find_file(path: str | pathlib.Path) -> pathlib.Path:
    """A config or study file: `path` as given (absolute, or relative to the working directory) where it exists,
    else the same relative path under `PROJECT_ROOT`, so that `experiments/<file>.py` names a shipped file from any
    directory; `path` unchanged when neither exists (the caller says so)."""
    path = pathlib.Path(path)
    if path.is_file() or path.is_absolute() or not (PROJECT_ROOT / path).is_file():
        return path
    return PROJECT_ROOT / path


def load_module(path: str | pathlib.Path):
    """The Python module of a config or study file (`find_file`), with the project root on `sys.path` so that it
    can import `experiments`."""
    path = find_file(path)
    if not path.is_file():
        raise StudyError(f"no such file: {path}")
    root = str(PROJECT_ROOT)
    if root not in sys.path:  # study and config files import `experiments`
        sys.path.insert(0, root)
    spec = importlib.util.spec_from_file_location(f"_seg_jax_file_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config(spec: str) -> ml_collections.ConfigDict:
    """The ConfigDict of `path.py[:arg]`, as `launch.py --config=` reads it."""
    path, _, arg = spec.partition(":")
    module = load_module(path)
    return module.get_config(arg) if arg else module.get_config()


def load_study(spec: str) -> ml_collections.ConfigDict:
    """The study of `path.py[:arg]` (its `get_study(arg)`), validated (`check_study`)."""
    path, _, arg = spec.partition(":")
    module = load_module(path)
    if not hasattr(module, "get_study"):
        raise StudyError(f"{path} has no get_study(arg): it is not a study file")
    study = module.get_study(arg or None)
    check_study(study)
    return study


def set_field(config: ml_collections.ConfigDict, dotted: str, value: Any, *, where: str) -> None:
    """Sets `config.<dotted>` to `value` (a mapping replaces the field whole)."""
    *parents, leaf = dotted.split(".")
    node = config
    for i, key in enumerate(parents):
        if key not in node or not isinstance(node[key], ml_collections.ConfigDict):
            raise StudyError(f"{where}: no config section {'.'.join(parents[:i + 1])!r} (in {dotted!r})")
        node = node[key]
    if leaf not in node and ".".join(parents) not in OPEN_SECTIONS:
        valid = ", ".join(sorted(node.keys()))
        raise StudyError(f"{where}: no config field {dotted!r}; fields there: {valid}")
    if isinstance(value, Mapping):
        value = ml_collections.ConfigDict(dict(value))
        if leaf in node:
            del node[leaf]  # a mapping replaces the field whole, whatever it held
    elif leaf in node and node[leaf] is not None and value is not None and type(node[leaf]) is not type(value):
        if not (isinstance(node[leaf], (int, float)) and isinstance(value, (int, float))):
            raise StudyError(f"{where}: {dotted} is {type(node[leaf]).__name__} in the base config, got "
                             f"{value!r}")
    with node.ignore_type():
        node[leaf] = value


def run_config(study: ml_collections.ConfigDict, arm: str, seed: int, *,
               workdir: str | pathlib.Path | None = None) -> ml_collections.ConfigDict:
    """The config of one run: the base, the arm's overrides, `seed` and a run name. In `train.init_from`,
    "{seed}" becomes the seed and "{study_workdir}" the study's `workdir` (left as written without one)."""
    if arm not in study.arms:
        raise StudyError(f"study {study.name!r} has no arm {arm!r}; arms: {', '.join(study.arms)}")
    overrides = dict(study.arms[arm])
    config = load_config(overrides.pop("base", None) or study.base)
    where = f"study {study.name!r} arm {arm!r}"
    for dotted, value in [*(study.get("common", None) or {}).items(), *overrides.items()]:
        value = value.to_dict() if hasattr(value, "to_dict") else copy.deepcopy(value)
        set_field(config, dotted, value, where=where)
    config.seed = int(seed)
    config.name = f"{study.name}_{arm}_seed{seed}"
    init_from = config.train.get("init_from", None)
    if init_from and workdir is not None:
        config.train.init_from = init_from.replace("{study_workdir}", str(workdir)).replace("{seed}", str(seed))
    return config


def split_term(term: str, *, arms: Sequence[str], where: str) -> tuple[str, str]:
    """A comparison's "arm:scalar" → (arm, scalar); raises `StudyError` (naming `where`) for another form or arm."""
    arm, sep, scalar = str(term).partition(":")
    if not sep or not arm or not scalar:
        raise StudyError(f"{where}: comparison term {term!r} is not 'arm:scalar' (e.g. 'plain:val/mean_iou')")
    if arm not in arms:
        raise StudyError(f"{where}: comparison term {term!r} names no arm; arms: {', '.join(arms)}")
    return arm, scalar


def comparisons(study: ml_collections.ConfigDict) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """The study's `comparisons` as [((arm, scalar), (arm, scalar))], checked (`split_term`; a pair of two terms
    that differ)."""
    where, pairs = f"study {study.name!r}", []
    for pair in study.get("comparisons", None) or ():
        if len(pair) != 2 or pair[0] == pair[1]:
            raise StudyError(f"{where}: a comparison is two different 'arm:scalar' terms, got {tuple(pair)!r}")
        pairs.append(tuple(split_term(term, arms=list(study.arms), where=where) for term in pair))
    return pairs


def starts_from_arm(study: ml_collections.ConfigDict, arm: str) -> bool:
    """Whether the arm's runs start from another arm's runs (`train.init_from` inside the study's workdir), so they
    must run after those."""
    value = dict(study.arms[arm]).get("train.init_from", (study.get("common", None) or {}).get("train.init_from"))
    return "{study_workdir}" in str(value or "")


def check_study(study: ml_collections.ConfigDict) -> None:
    """Raises `StudyError` for a study that cannot run: no arms or seeds, a baseline that is no arm, an arm that
    names a missing field, a comparison that is not two 'arm:scalar' terms of its arms."""
    for key in ("name", "base", "arms", "seeds", "metrics", "baseline"):
        if key not in study or study[key] in (None, (), []):
            raise StudyError(f"study is missing {key!r}; a study needs name, base, arms, seeds, metrics, baseline")
    name = study.name
    if study.baseline not in study.arms:
        raise StudyError(f"study {name!r}: baseline {study.baseline!r} is not an arm; arms: {', '.join(study.arms)}")
    if len(set(study.seeds)) != len(study.seeds):
        raise StudyError(f"study {name!r}: seeds repeat: {list(study.seeds)}")
    for arm in study.arms:
        if not arm.replace("_", "").replace("-", "").isalnum():
            raise StudyError(f"study {name!r}: arm name {arm!r} must be letters, digits, '_' or '-' (a directory)")
        run_config(study, arm, study.seeds[0])
    comparisons(study)


def as_json(study: ml_collections.ConfigDict, *, commit: str | None) -> dict[str, Any]:
    """What `study.json` records (read by the aggregation)."""
    return {"name": study.name, "description": study.get("description", ""), "base": study.base,
            "arms": {arm: study.arms[arm].to_dict() for arm in study.arms},
            "common": (study.get("common", None) or ml_collections.ConfigDict()).to_dict(),
            "seeds": [int(s) for s in study.seeds],
            "metrics": list(study.metrics), "per_class": list(study.get("per_class", ()) or ()),
            "contrasts": [list(pair) for pair in (study.get("contrasts", None) or ())],
            "comparisons": [list(pair) for pair in (study.get("comparisons", None) or ())],
            "baseline": study.baseline, "curve_metric": study.get("curve_metric", None) or study.metrics[0],
            "vmap_seeds": bool(study.get("vmap_seeds", False)), "commit": commit}


def check_metrics(study: ml_collections.ConfigDict) -> None:
    """Raises `StudyError` when an arm's evaluators do not report every metric, per-class prefix and curve metric
    of the study (builds each arm's task and evaluators; no data is read)."""
    from seg_jax import data, evaluators  # deferred: the rest of a study file's checks need no JAX
    from seg_jax.train.experiment import build_experiment
    for arm in study.arms:
        config = run_config(study, arm, study.seeds[0])
        class_names = data.class_names(config.data)
        task = build_experiment(config, num_classes=len(class_names)).task
        names = evaluators.scalar_names(evaluators.build_evaluators(config, task=task, class_names=class_names))
        wanted = [*study.metrics, *(m for pair in (study.get("contrasts", None) or ()) for m in pair)]
        curve = study.get("curve_metric", None)
        missing = [m for m in wanted if m not in names] + ([curve] if curve and not curve.startswith("train/")
                                                            and curve not in names else [])
        missing += [p for p in (study.get("per_class", None) or ()) if not any(n.startswith(p + "/") for n in names)]
        missing += [f"{scalar} (comparisons)" for pair in comparisons(study) for term_arm, scalar in pair
                    if term_arm == arm and scalar not in names]
        if missing:
            raise StudyError(f"study {study.name!r} arm {arm!r}: its evaluators report no {', '.join(missing)}; "
                             f"they report {', '.join(n for n in names if n.count('/') == 1)} (and per-class ones)")
