"""Shared fixtures: one TFDS data directory for the whole session, and test-sized configs."""
import importlib
import os
import pathlib
import sys

from seg_jax import entry  # noqa: E402  (imports nothing heavy)

# Worker processes share one accelerator when there is one: do not let the first take 75 % of its memory.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# The worker processes (and the tests' subprocesses) start with it: huge pages for XLA:CPU's buffers, as the command
# line gives its runs.
os.environ.setdefault("GLIBC_TUNABLES", entry.TUNABLE)

import jax  # noqa: E402
import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `experiments` is imported as a package from the repo root
    sys.path.insert(0, str(ROOT))


def pytest_configure(config):
    # XLA:CPU compilation dominates the suite; tests compile the same tiny steps many times, and the
    # subprocess tests of test_parallel.py share the cache through the environment variable.
    cache = pathlib.Path(config.rootpath) / ".pytest_cache" / "jax_compilation_cache"
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(cache)
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


# The slowest files first (one worker's seconds, 2026-12-02, 2 cores shared with a study: train 109, mask_rcnn_run
# 104, parallel 103, gpu_suite 83, tune 69, nuclei and export 56, backbones 46, runs_eval 45, models 44, studies 43,
# mask_rcnn 39, crf 33; the others under 30). The two workers take whole files in this order (pytest.ini), so the
# last files are short and neither worker waits long for the other at the end (longest first).
SLOWEST_FIRST = ("test_train.py", "test_mask_rcnn_run.py", "test_parallel.py", "test_benchmarks_gpu_suite.py",
                 "test_tune.py", "test_nuclei.py", "test_export.py", "test_backbones.py", "test_runs_eval.py",
                 "test_models.py", "test_studies.py", "test_mask_rcnn.py", "test_crf.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the other files keep their order


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """A session-wide TFDS directory; the `tiny` datasets are generated into it once."""
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture
def make_config(data_dir):
    """`make_config("fcn", "fcn8s,tiny")` → that experiment's config reading from the session data dir."""
    def make(config_file: str = "default", arg: str | None = "tiny"):
        config = importlib.import_module(f"experiments.{config_file}").get_config(arg)
        config.data.data_dir = data_dir
        return config
    return make
