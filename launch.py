"""Trains, evaluates, predicts with or exports an experiment; all logic lives in `seg_jax.train`, `seg_jax.predict`
and `seg_jax.export`.

    python launch.py                                      # default experiment: U-Net on `shapes`
    python launch.py --config=experiments/fcn.py:fcn8s --workdir=runs/fcn8s --config.train.steps=2000
    python launch.py --workdir=runs/fcn8s --mode=eval       # with the run's own config.json
    python launch.py --workdir=runs/fcn8s --mode=predict --input=photos/ --output=runs/fcn8s/predicted
    python launch.py --workdir=runs/default_crf --mode=tune  # search the CRF on validation; eval/predict use it
    python launch.py --workdir=runs/fcn8s --mode=export --output=runs/fcn8s/exported  # jax.export, no model code
    python launch.py --config=experiments/nuclei.py:ce_cc --mode=check_data  # scan the data, train nothing
    python launch.py --study=experiments/studies/imbalance.py --workdir=runs/studies/imbalance  # arms x seeds
"""
from __future__ import annotations

import pathlib
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/default.py", "Experiment config file[:arg].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default: runs/<config.name>).")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "predict", "tune", "export", "check_data"],
                          "train (resumes automatically), eval, predict (--input images), tune (post-processing, "
                          "config.tune), export (jax.export to --output), or check_data (scan the configured splits).")
_SPLIT = flags.DEFINE_string("split", None, "eval mode: split every evaluator runs on (default: each one's own).")
_WHICH = flags.DEFINE_enum("checkpoint", "latest", ["latest", "best"],
                           "eval, predict, tune, export: which checkpoint.")
_INPUT = flags.DEFINE_string("input", None, "predict: a folder of images, one image, or a glob.")
_OUTPUT = flags.DEFINE_string("output", None, "predict, export: folder the outputs are written to.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "predict, tune, export: replace existing outputs.")
_NO_TUNED = flags.DEFINE_bool("no_tuned", False, "eval, predict: the config's post-processing, not <workdir>/tuned's.")
_STUDY = flags.DEFINE_string("study", None, "Study file[:arg]: run every arm x seed, then tabulate (--config unused).")
_STUDY_PARALLEL = flags.DEFINE_integer("study_parallel", 1, "study: runs at once (subprocesses).")
_STUDY_ONLY = flags.DEFINE_list("study_only", None, "study: only these arms.")
_STUDY_COMMANDS = flags.DEFINE_bool("study_commands", False, "study: print one launch.py line per run and exit.")
_STUDY_RUN = flags.DEFINE_string("study_run", None, "study: run only ARM/seed<k>.")
_MULTIHOST = flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() (one process per host).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from seg_jax.train.writers import QuietLibraries
    logging.get_absl_handler().addFilter(QuietLibraries(own_files=(__file__,)))
    if _MULTIHOST.value:
        jax.distributed.initialize()
    if _STUDY.value:
        return _study(_STUDY.value)
    from seg_jax import train  # after flag parsing, so --help stays fast
    from seg_jax.export import ExportError
    from seg_jax.predict import PredictError
    try:
        return _run(train)
    except train.ConfigError as e:  # one line, exit status 2: nothing was written
        print(f"error: {e.field}: {e.message}", file=sys.stderr)
        return 2
    except (*train.RUN_ERRORS, PredictError, ExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def _run(train) -> int:
    config = _CONFIG.value
    if _MODE.value == "check_data":
        print(train.check_data(config).text())
        return 0
    workdir = _WORKDIR.value or str(pathlib.Path("runs") / config.name)
    logging.info("process %d/%d, local devices: %s, workdir: %s", jax.process_index(), jax.process_count(),
                 jax.local_devices(), workdir)
    if _MODE.value == "train":
        train.train_and_evaluate(config, workdir)
        return 0
    if not flags.FLAGS["config"].present:  # the run's own config, with any --config.<field> overrides
        config = _saved_config(pathlib.Path(workdir))
    if _MODE.value == "predict":
        from seg_jax import predict
        report = predict.predict_folder(config, workdir, inputs=_INPUT.value, output=_OUTPUT.value,
                                        overwrite=_OVERWRITE.value, which=_WHICH.value,
                                        use_tuned=not _NO_TUNED.value)
        return 1 if report.failed else 0
    if _MODE.value == "tune":
        from seg_jax import tune
        tune.tune(config, workdir, which=_WHICH.value, overwrite=_OVERWRITE.value)
        return 0
    if _MODE.value == "export":
        from seg_jax import export
        export.export_run(workdir, _OUTPUT.value, config=config, which=_WHICH.value, overwrite=_OVERWRITE.value)
        return 0
    train.evaluate(config, workdir, split=_SPLIT.value, which=_WHICH.value, use_tuned=not _NO_TUNED.value)
    return 0


def _saved_config(workdir: pathlib.Path):
    from seg_jax.train import workdir as wd
    from seg_jax.predict.config import with_defaults
    from seg_jax.tune import config as tune_config
    # a run saved before the `predict` or `tune` section has their defaults
    config = tune_config.with_defaults(with_defaults(wd.read_config(workdir)))
    overrides = config_flags.get_override_values(flags.FLAGS["config"])
    if overrides:
        config.update_from_flattened_dict(overrides)
        logging.info("evaluating with %s/config.json and %s", workdir,
                     ", ".join(f"{k}={v!r}" for k, v in overrides.items()))
    return config


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
