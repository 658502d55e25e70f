"""Trains or evaluates an experiment; all logic lives in `seg_jax.train`.

    python launch.py                                      # default experiment: U-Net on `shapes`
    python launch.py --config=experiments/fcn.py:fcn8s --workdir=runs/fcn8s --config.train.steps=2000
    python launch.py --config=experiments/fcn.py:fcn8s --workdir=runs/fcn8s --mode=eval
"""
from __future__ import annotations

import pathlib

import jax
from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/default.py", "Experiment config file[:arg].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default: runs/<config.name>).")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"], "train (resumes automatically) or eval.")
_SPLIT = flags.DEFINE_string("split", None, "eval mode: split to evaluate (default config.data.eval_split).")
_WHICH = flags.DEFINE_enum("checkpoint", "latest", ["latest", "best"], "eval mode: which checkpoint.")
_MULTIHOST = flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() (one process per host).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _MULTIHOST.value:
        jax.distributed.initialize()
    from seg_jax import train  # after flag parsing, so --help stays fast

    config = _CONFIG.value
    workdir = _WORKDIR.value or str(pathlib.Path("runs") / config.name)
    logging.info("process %d/%d, local devices: %s, workdir: %s", jax.process_index(), jax.process_count(),
                 jax.local_devices(), workdir)
    if _MODE.value == "train":
        train.train_and_evaluate(config, workdir)
    else:
        train.evaluate(config, workdir, split=_SPLIT.value, which=_WHICH.value)


if __name__ == "__main__":
    app.run(main)
