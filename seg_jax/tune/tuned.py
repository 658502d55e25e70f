"""Tuned post-processing beside the checkpoint: `<workdir>/tuned/<entry>.json` (+ `.md`), written by
`--mode=tune` and applied by eval and predict.

Eval (`seg_jax.train.evaluate`) and predict (`seg_jax.predict.load_predictor` / `predict_folder`) call
`apply_tuned`: each `evals` entry with a tuned file gets the file's chosen options over the config's (also over
`--config.evals.<entry>.<option>` overrides), logged, unless `use_tuned=False` (`--no_tuned`).
"""
from __future__ import annotations

import json
import pathlib
from typing import Any

import ml_collections
from absl import logging

from seg_jax.train.validate import ConfigError
from seg_jax.tune import target as tgt

FOLDER = "tuned"


class TunedExistsError(FileExistsError):
    """`--mode=tune` would replace a tuned file; the message names it and `--overwrite`."""


def tuned_path(workdir: str | pathlib.Path, entry: str) -> pathlib.Path:
    """`<workdir>/tuned/<entry>.json`."""
    from seg_jax.evaluators.base import safe_name  # here: seg_jax.train imports this module, evaluators import train
    return pathlib.Path(workdir) / FOLDER / f"{safe_name(entry)}.json"


def read_tuned(workdir: str | pathlib.Path, entry: str) -> dict | None:
    """The tuned record of `entry` (as `seg_jax.tune.run.tune` writes it), None without one."""
    path = tuned_path(workdir, entry)
    return json.loads(path.read_text()) if path.exists() else None


def _checked(record: dict, *, path: pathlib.Path, entry: str, kind: str) -> dict[str, Any]:
    """The chosen options of a tuned record, refused (naming the file) when they do not fit the entry."""
    if record.get("type") != kind:
        raise ConfigError(f"evals.{entry}", f"{path} was tuned for an entry of type {record.get('type')!r}, and "
                                            f"evals.{entry} has type {kind!r}; tune it again (--mode=tune "
                                            "--overwrite) or pass --no_tuned")
    chosen = dict(record.get("chosen") or {})
    unknown = sorted(set(chosen) - set(tgt.option_defaults(kind)))
    if unknown:
        raise ConfigError(f"evals.{entry}", f"{path} sets {', '.join(unknown)}, not options of type {kind!r}; tune "
                                            "it again (--mode=tune --overwrite) or pass --no_tuned")
    return chosen


def apply_tuned(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *,
                use_tuned: bool = True) -> tuple[ml_collections.ConfigDict, dict[str, dict]]:
    """`config` (a copy) with the tuned options of every "crf" / "instances" entry that has a tuned file in
    `workdir`, unless `use_tuned` is False; and, per such entry, what its post-processing uses:
    `{"source": "tuned" | "config", "options": {option: value}, "file": str | None, "tuned_step": int | None}`.

    Raises:
        ConfigError: naming `evals.<entry>` and the file, when a tuned file does not fit its entry.
    """
    config = config.copy_and_resolve_references()
    used: dict[str, dict] = {}
    for name, entry in (config.get("evals", None) or {}).items():
        kind = entry.get("type", None)
        if kind not in tgt.KINDS:
            continue
        path = tuned_path(workdir, name)
        record = json.loads(path.read_text()) if path.exists() else None
        if record is None or not use_tuned:
            if record is not None:
                logging.info("evals.%s: the config's options, not those tuned in %s (use_tuned=False)", name, path)
            used[name] = {"source": "config", "options": tgt.options_of(entry, kind=kind), "file": None,
                          "tuned_step": None}
            continue
        chosen = _checked(record, path=path, entry=name, kind=kind)
        config.evals[name] = tgt.with_options(entry, chosen, kind=kind)
        logging.info("evals.%s: tuned options from %s (step %s, %s on %s: %.4f with the config's, %.4f tuned): "
                     "%s; --no_tuned for the config's", name, path, record.get("step"), record.get("metric"),
                     record.get("split"), record.get("baseline", float("nan")), record.get("best", float("nan")),
                     ", ".join(f"{k}={v!r}" for k, v in chosen.items()))
        used[name] = {"source": "tuned", "options": tgt.options_of(config.evals[name], kind=kind), "file": str(path),
                      "tuned_step": record.get("step")}
    return config, used
