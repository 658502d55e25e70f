"""The command line: `seg-jax <command>` = `python launch.py --mode=<command>`, one function behind both, and
config and study files found from any working directory."""
from __future__ import annotations

import importlib.util
import os
import pathlib
import platform
import shlex
import shutil
import subprocess
import sys
import tomllib

import pytest

from seg_jax import cli, entry
from seg_jax.studies import spec

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_console_script_and_launch_py_call_the_same_function():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"seg-jax": "seg_jax.entry:run"}
    loader = importlib.util.spec_from_file_location("launch_under_test", ROOT / "launch.py")
    launch = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(launch)  # not __main__: defines, runs nothing
    assert launch.run is entry.run
    assert "from seg_jax.entry import run" in (ROOT / "seg_jax" / "__main__.py").read_text()


def test_entry_asks_glibc_for_huge_pages_once_and_leaves_a_users_setting():
    assert entry.environment({"PATH": "/bin"}, libc="glibc") == {"PATH": "/bin", "GLIBC_TUNABLES": entry.TUNABLE}
    assert entry.environment({"GLIBC_TUNABLES": entry.TUNABLE}, libc="glibc") is None  # the process it started
    assert entry.environment({"GLIBC_TUNABLES": ""}, libc="glibc") is None  # the user's own (here: none)
    assert entry.environment({}, libc="") is None  # musl, macOS: nothing to set


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_the_command_runs_itself_again_with_the_tunable_and_then_the_cli():
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    code = ("import os, sys; print('tunables', os.environ.get('GLIBC_TUNABLES'), flush=True); "
            "from seg_jax import entry; sys.argv = ['seg-jax', '--helpshort']; entry.run()")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    lines = done.stdout.splitlines()  # (absl's --helpshort exits with status 1)
    assert lines[:2] == ["tunables None", f"tunables {entry.TUNABLE}"]  # the first process, then the second
    assert "--workdir" in done.stdout  # the CLI ran in the second


@pytest.mark.parametrize("command,flag", [(m, f"--mode={m}") for m in cli.MODES])
def test_a_command_becomes_its_mode_flag(command, flag):
    assert cli.command_argv(["seg-jax", command, "--workdir=w", "--config.seed=3"]) == [
        "seg-jax", flag, "--workdir=w", "--config.seed=3"]


def test_study_command_names_the_study_file_and_bad_lines_are_refused():
    assert cli.command_argv(["seg-jax", "study", "/s.py:tiny", "--study_commands"]) == [
        "seg-jax", "--study=/s.py:tiny", "--study_commands"]
    assert cli.command_argv(["launch.py", "--mode=eval", "--workdir=w"]) == ["launch.py", "--mode=eval", "--workdir=w"]
    with pytest.raises(cli.UsageError, match="`eval` and --mode both given"):
        cli.command_argv(["seg-jax", "eval", "--mode=train"])
    with pytest.raises(cli.UsageError, match="needs the study file"):
        cli.command_argv(["seg-jax", "study", "--workdir=w"])


def test_config_and_study_files_are_found_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = str(ROOT / "experiments" / "fcn.py")
    argv = cli.command_argv(["seg-jax", "train", "--config=experiments/fcn.py:fcn8s,tiny", "--config.seed=1",
                             "--study", "experiments/studies/imbalance.py"])
    assert argv == ["seg-jax", "--mode=train", f"--config={shipped}:fcn8s,tiny", "--config.seed=1", "--study",
                    str(ROOT / "experiments" / "studies" / "imbalance.py")]
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "fcn.py").write_text("")  # the working directory's own file comes first
    assert spec.find_file("experiments/fcn.py") == pathlib.Path("experiments/fcn.py")
    assert spec.find_file("missing.py") == pathlib.Path("missing.py")  # left for the loader to report
    assert cli.command_argv(["x", "--config=missing.py"]) == ["x", "--config=missing.py"]
    assert spec.load_config("experiments/default.py:tiny").name == "default_tiny"  # what a study's base names


def _entry_point() -> tuple[list[str], dict]:
    """The installed `seg-jax` script where there is one (pip install -e .), else `python -m seg_jax` with the
    checkout on PYTHONPATH."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    script = shutil.which("seg-jax", path=str(pathlib.Path(sys.executable).parent))
    if script:
        env.pop("PYTHONPATH", None)
        return [script], env
    env["PYTHONPATH"] = str(ROOT)
    return [sys.executable, "-m", "seg_jax"], env


def test_entry_point_runs_from_another_directory(tmp_path, data_dir):
    command, env = _entry_point()
    # A config found, built, overridden and validated; the bad value stops it before anything is written.
    done = subprocess.run([*command, "train", "--config=experiments/default.py:tiny", "--workdir=run",
                           "--config.train.batch_size=-4", f"--config.data.data_dir={data_dir}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == "error: train.batch_size: must be an integer >= 1, got -4"
    assert list(tmp_path.iterdir()) == []
    # A study and its base configs found; one command line per run, each starting this program again.
    done = subprocess.run([*command, "study", "experiments/studies/imbalance.py:tiny", "--study_commands",
                           "--study_only=ce", "--workdir=w"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [shlex.split(line) for line in done.stdout.strip().splitlines()]
    study = ROOT / "experiments" / "studies" / "imbalance.py"
    assert [line[-3:] for line in lines] == [[f"--study={study}:tiny", "--workdir=w", f"--study_run=ce/seed{s}"]
                                             for s in (0, 1)]
    assert lines[0][1] in (str(ROOT / "launch.py"), "-m")
    assert list(tmp_path.iterdir()) == []
    # A bad study argument: one line naming it, exit status 2, nothing written.
    done = subprocess.run([*command, "study", "experiments/studies/imbalance.py:tiny", "--study_run=ce/0",
                           "--workdir=w"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == (
        "error: --study_run must look like ARM/seed<k> (e.g. ce/seed0), got 'ce/0'")
    assert list(tmp_path.iterdir()) == []


CACHED_PROGRAM = """
import sys, jax, jax.numpy as jnp, numpy as np
from seg_jax import cli
hits = []
jax.monitoring.register_event_listener(lambda event, **kw: hits.append(event) if event.endswith("cache_hits") else None)
print(cli.use_compilation_cache(sys.argv[1]), jax.config.jax_compilation_cache_dir)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # the test's tiny program compiles in ms
jax.jit(lambda x: jnp.sin(x) * 3 + 1)(np.arange(5.0)).block_until_ready()  # one program
print(len(hits))
"""


def test_the_compilation_cache_serves_a_second_process_and_leaves_a_configured_one_alone(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}  # the suite sets one

    def run(directory):
        done = subprocess.run([sys.executable, "-c", CACHED_PROGRAM, directory], env=env,
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout.split()

    cache = tmp_path / "cache"
    assert run(str(cache)) == ["True", str(cache), "0"]  # compiled and stored
    assert any(cache.iterdir())
    assert run(str(cache)) == ["True", str(cache), "1"]  # the next process loads it
    import jax
    configured = jax.config.jax_compilation_cache_dir  # this process: the suite's cache (conftest)
    assert configured and not cli.use_compilation_cache(str(tmp_path / "other"))
    assert jax.config.jax_compilation_cache_dir == configured  # a configured cache is kept
    assert not cli.use_compilation_cache("")  # --compilation_cache= turns it off
