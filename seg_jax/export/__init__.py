"""A trained run serialised with `jax.export` (StableHLO) and run without this codebase's model code
(`python launch.py --mode=export --workdir=W --output=DIR`).

Modules, in the order a model flows:
    exporter  `export_run`: a run restored (`seg_jax.predict`), its predict function with the normalisation inside,
              written as `model.jaxexport` beside `export.json` (classes, normalisation, shapes, post-processing)
    loader    `load_exported`: the two files back as a callable; imports only numpy and jax (copy the file to use
              it where seg_jax is not installed)

Public names are imported on first use (PEP 562), so `seg_jax.export.loader` imports no model code.
"""
from __future__ import annotations

from seg_jax.lazy import exports

_PUBLIC = {
    "ExportError": "seg_jax.export.loader",
    "ExportedModel": "seg_jax.export.loader",
    "load_exported": "seg_jax.export.loader",
    "export_predictor": "seg_jax.export.exporter",
    "export_run": "seg_jax.export.exporter",
}

__getattr__, __dir__, __all__ = exports(__name__, _PUBLIC)
