"""Data stage, structure: no import cycle between data modules, configs built without TFDS or grain,
the lazy public names, and a data config resolved once however much is asked of the dataset."""
from __future__ import annotations

import ast
import dataclasses
import pathlib
import subprocess
import sys

import numpy as np

from seg_jax import data
from seg_jax.data import catalog

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "seg_jax" / "data"


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def data_imports(path: pathlib.Path, modules: set[str]) -> set[str]:
    """The data modules `path` imports, anywhere in the file (deferred imports hide cycles, so they count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                      for alias in node.names}
    return {name for name in found if name in modules}


def test_data_modules_import_no_cycle():
    paths = sorted(DATA.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    graph = {module_name(path): data_imports(path, modules) for path in paths}
    assert graph["seg_jax.data"] == set()  # the package imports its modules lazily
    state: dict[str, str] = {}

    def visit(module: str, chain: list[str]) -> None:
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", f"import cycle: {' -> '.join(chain + [module])}"
        state[module] = "open"
        for imported in sorted(graph[module]):
            visit(imported, chain + [module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])
    # The layers as documented: sources import nothing above them, derived only sources.
    for module, imported in graph.items():
        if ".sources." in module:
            assert all(".sources." in other for other in imported), (module, imported)
        if ".derived." in module:
            assert all(".sources." in other or ".derived." in other for other in imported), (module, imported)


def test_building_configs_imports_neither_tfds_nor_grain():
    code = ("import sys\nfrom seg_jax import data\nfrom seg_jax.data import config\n"
            "cfg = data.base_config('shapes'); config.base_config('folder')\n"
            "heavy = sorted(m for m in ('tensorflow_datasets', 'grain') if m in sys.modules)\n"
            "assert not heavy, heavy\nprint(cfg.name)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "shapes", out.stderr


def test_every_public_name_resolves():
    for name in data.__all__:
        assert getattr(data, name) is not None, name
    assert set(data.__all__) <= set(dir(data))
    try:
        data.prepare  # noqa: B018 -- removed: one way to do each thing
    except AttributeError as error:
        assert "resolve" in str(error)
    else:
        raise AssertionError("data.prepare should be gone")


def test_resolve_loads_the_builder_once(tmp_path, monkeypatch):
    spec = catalog.DATASETS.get("shapes")
    calls = []

    def counting(data_cfg):
        calls.append(data_cfg.variant)
        return spec.load_builder(data_cfg)

    monkeypatch.setitem(catalog.DATASETS._entries, "shapes", dataclasses.replace(spec, load_builder=counting))
    cfg = data.base_config("shapes")
    cfg.data_dir, cfg.variant, cfg.crop_size = str(tmp_path), "tiny", (16, 16)
    ds = data.resolve(cfg)
    cfg.variant = "default"  # the dataset keeps the config it was resolved from
    assert ds.config.variant == "tiny" and len(ds.source("train")) == 24
    assert ds.source("train") is ds.source("train")
    counts = ds.class_pixel_counts()
    np.testing.assert_array_equal(ds.class_pixel_counts(split="train"), counts)
    ds.class_weights("inverse_frequency")
    ds.class_weights("median_frequency", split="validation")
    next(data.train_batches(ds, global_batch_size=4, seed=0, num_local_devices=1))
    assert len(list(data.eval_batches(ds, split="validation", global_batch_size=4, num_local_devices=1))) == 2
    data.check_dataset(ds, splits=("train", "validation"))
    assert calls == ["tiny"]
