"""Post-processing tuned on validation and saved with the model (`python launch.py --mode=tune --workdir=W`).

Modules:
    config  the `tune` config section (entry, metric, space, search, split), light to import
    target  the section checked against the run's evaluators; an entry's tunable options read and written
    search  coordinate and grid search, pure functions of a score function
    run     `tune`: the network's outputs cached once, the entry's evaluator re-run per trial, files written
    tuned   `<workdir>/tuned/<entry>.json`: read, and applied by eval and predict (`apply_tuned`)

Public names are imported on first use (PEP 562), so configs import `seg_jax.tune.config` without jax and
`seg_jax.train` imports `tuned` without the search.
"""
from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "ReplayTask": "seg_jax.tune.run",
    "TuneResult": "seg_jax.tune.run",
    "TunedExistsError": "seg_jax.tune.tuned",
    "apply_tuned": "seg_jax.tune.tuned",
    "read_tuned": "seg_jax.tune.tuned",
    "tune": "seg_jax.tune.run",
    "tuned_path": "seg_jax.tune.tuned",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'seg_jax.tune' has no attribute {name!r}; public names: {', '.join(__all__)}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
