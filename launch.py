"""Trains or evaluates an experiment; all logic lives in `seg_jax.train`.

    python launch.py                                      # default experiment: U-Net on `shapes`
    python launch.py --config=experiments/fcn.py:fcn8s --workdir=runs/fcn8s --config.train.steps=2000
    python launch.py --config=experiments/fcn.py:fcn8s --workdir=runs/fcn8s --mode=eval
    python launch.py --config=experiments/nuclei.py:ce_cc --mode=check_data  # scan the data, train nothing
    python launch.py --study=experiments/studies/imbalance.py --workdir=runs/studies/imbalance  # arms x seeds
"""
from __future__ import annotations

import logging as std_logging
import pathlib

import jax
from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/default.py", "Experiment config file[:arg].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default: runs/<config.name>).")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "check_data"],
                          "train (resumes automatically), eval, or check_data (scan the configured splits).")
_SPLIT = flags.DEFINE_string("split", None, "eval mode: split every evaluator runs on (default: each one's own).")
_WHICH = flags.DEFINE_enum("checkpoint", "latest", ["latest", "best"], "eval mode: which checkpoint.")
_STUDY = flags.DEFINE_string("study", None, "Study file[:arg]: run every arm x seed, then tabulate (--config unused).")
_STUDY_PARALLEL = flags.DEFINE_integer("study_parallel", 1, "study: runs at once (subprocesses).")
_STUDY_ONLY = flags.DEFINE_list("study_only", None, "study: only these arms.")
_STUDY_COMMANDS = flags.DEFINE_bool("study_commands", False, "study: print one launch.py line per run and exit.")
_STUDY_RUN = flags.DEFINE_string("study_run", None, "study: run only ARM/seed<k>.")
_MULTIHOST = flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() (one process per host).")


class _QuietLibraries(std_logging.Filter):
    """Keeps seg_jax's progress lines and every warning; drops the libraries' INFO chatter."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        if "OpenCV is not installed" in str(record.msg):  # TFDS decodes PNGs with Pillow; that is fine
            return False
        return record.levelno >= std_logging.WARNING or "seg_jax" in record.pathname or __file__ == record.pathname


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_QuietLibraries())
    if _MULTIHOST.value:
        jax.distributed.initialize()
    if _STUDY.value:
        return _study(_STUDY.value)
    from seg_jax import train  # after flag parsing, so --help stays fast

    config = _CONFIG.value
    if _MODE.value == "check_data":
        print(train.check_data(config).text())
        return
    workdir = _WORKDIR.value or str(pathlib.Path("runs") / config.name)
    logging.info("process %d/%d, local devices: %s, workdir: %s", jax.process_index(), jax.process_count(),
                 jax.local_devices(), workdir)
    if _MODE.value == "train":
        train.train_and_evaluate(config, workdir)
    else:
        train.evaluate(config, workdir, split=_SPLIT.value, which=_WHICH.value)


def _study(spec: str) -> int:
    from seg_jax.studies import runner, spec as study_spec
    study = study_spec.load_study(spec)
    workdir = _WORKDIR.value or str(pathlib.Path("runs") / "studies" / study.name)
    if _STUDY_COMMANDS.value:
        print("\n".join(runner.commands(spec, workdir, study, only=_STUDY_ONLY.value)))
        return 0
    if _STUDY_RUN.value:
        arm, seed = runner.parse_run(_STUDY_RUN.value)
        runner.write_study_json(study, pathlib.Path(workdir))
        return 0 if runner.run_one(study, arm, seed, workdir) else 1
    logging.info("study %s: tables in %s", study.name,
                 runner.run_study(spec, workdir, parallel=_STUDY_PARALLEL.value, only=_STUDY_ONLY.value))
    return 0


if __name__ == "__main__":
    app.run(main)
