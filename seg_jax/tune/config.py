"""`base_config`: the `tune` section of an experiment config (`--mode=tune`), every key with its default.

Light on purpose (as `seg_jax.predict.config`): experiment configs import it without jax. A run saved before this
section existed has none in its `config.json`; `with_defaults` adds it.
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

SEARCHES = ("coordinate", "grid")


def base_config() -> ml_collections.ConfigDict:
    """The tune settings at their defaults, valid for every config.

    Keys:
        entry: the `evals` entry whose post-processing is searched, of type "crf" (dense-CRF parameters) or
            "instances" (thresholds, min size, markers); None = the first entry of either type.
        metric: the scalar maximised, one the entry reports (`"val_crf/mean_iou"`, `"val_instances/dsb"`);
            None = `<entry>/mean_iou` for "crf", `<entry>/dsb` for "instances".
        space: {option: [values]} searched; empty = the entry type's default space (`seg_jax.tune.target.
            default_space`). "crf" options are the entry's own (`gaussian_compat`, `bilateral_srgb`, ...);
            "instances" options are those of `seg_jax.postprocess.instances_from_semantic` (`min_size`,
            `foreground_threshold`, `markers`, ...) and `per_class`.
        search: "coordinate": from the config's options, each option in turn is set to the best of its listed
            values with the others fixed, for up to `sweeps` passes (stopping after a pass that changes nothing);
            "grid": every combination of the listed values.
        sweeps: coordinate search: passes over the options.
        max_trials: evaluations of the post-processing at most, the config's own options included; the
            coordinate search stops there (logged), a bigger grid is refused.
        split: the split searched on; None = the entry's own (`evals.<entry>.split`, else `data.eval_split`).
        allow_test: searching on a test split is refused unless True (tuning on test data overstates results).
        max_cache_gb: the network's outputs on the split are computed once and held in host memory; a split whose
            outputs would take more GiB than this is refused (tune on a slice such as "validation[:200]").
    """
    return ml_collections.ConfigDict({
        "entry": config_dict.placeholder(str),
        "metric": config_dict.placeholder(str),
        "space": ml_collections.ConfigDict(),
        "search": "coordinate",
        "sweeps": 2,
        "max_trials": 64,
        "split": config_dict.placeholder(str),
        "allow_test": False,
        "max_cache_gb": 16.0,
    })


def with_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with a `tune` section: its own keys over `base_config()` (a run saved before the section)."""
    merged = base_config()
    own = config.get("tune", None)
    merged.update(dict(own.to_dict() if hasattr(own, "to_dict") else (own or {})))
    config.tune = merged
    return config
