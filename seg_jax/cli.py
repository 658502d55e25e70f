"""The command line. `seg-jax <command> ...` (the installed console script), `python launch.py --mode=<command> ...`
and `python -m seg_jax <command> ...` are one program: each calls `run`. All logic lives in `seg_jax.train`,
`seg_jax.predict`, `seg_jax.tune`, `seg_jax.export` and `seg_jax.studies`.

    seg-jax train                                           # = python launch.py: the default experiment
    seg-jax train --config=experiments/fcn.py:fcn8s --workdir=runs/fcn8s --config.train.steps=2000
    seg-jax eval --workdir=runs/fcn8s                       # with the run's own config.json
    seg-jax predict --workdir=runs/fcn8s --input=photos/ --output=runs/fcn8s/predicted
    seg-jax tune --workdir=runs/default_crf                 # search the CRF on validation; eval/predict use it
    seg-jax export --workdir=runs/fcn8s --output=runs/fcn8s/exported  # jax.export, no model code needed
    seg-jax check_data --config=experiments/nuclei.py:ce_cc # scan the data, train nothing
    seg-jax study experiments/studies/imbalance.py --workdir=runs/studies/imbalance  # arms x seeds

`--config` and `--study` files are found as given (absolute, or relative to the working directory) or else among
the shipped ones (`experiments/...` relative to the project, `seg_jax.studies.spec.find_file`), so every command
runs from any directory.
"""
from __future__ import annotations

import os
import pathlib
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from seg_jax.studies.spec import PROJECT_ROOT, find_file

MODES = ("train", "eval", "predict", "tune", "export", "check_data")
COMMANDS = (*MODES, "study")  # `seg-jax <command>`; study takes the study file next
DEFAULT_CONFIG = PROJECT_ROOT / "experiments" / "default.py"

_CONFIG = config_flags.DEFINE_config_file("config", str(DEFAULT_CONFIG),
                                          "Experiment config file[:arg] (default: experiments/default.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default: runs/<config.name>).")
_MODE = flags.DEFINE_enum("mode", "train", list(MODES),
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
_STUDY_COMMANDS = flags.DEFINE_bool("study_commands", False, "study: print one command line per run and exit.")
_STUDY_RUN = flags.DEFINE_string("study_run", None, "study: run only ARM/seed<k>.")
_MULTIHOST = flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() (one process per host).")
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache", os.path.expanduser("~/.cache/seg_jax/jax_compilation_cache"),
    "JAX's persistent compilation cache: a later run of the same program (another seed, arm or mode) loads its "
    "compiled steps instead of compiling them again. Empty: off. Unused by multi-process runs and where JAX's "
    "cache is already configured (JAX_COMPILATION_CACHE_DIR).")


class UsageError(ValueError):
    """A command line that names its command twice or leaves out the study file."""


def command_argv(argv: list[str]) -> list[str]:
    """The flags form of a command line: `[prog, "train", *rest]` → `[prog, "--mode=train", *rest]`, `[prog,
    "study", FILE, *rest]` → `[prog, "--study=FILE", *rest]`; a line without a command stays as it is. The files of
    `--config` and `--study` are replaced by where `find_file` finds them (their `:arg` kept).

    Raises:
        UsageError: a command together with `--mode` (or `study` with `--study`), or `study` without a file.
    """
    prog, rest = argv[0], list(argv[1:])
    if rest and rest[0] in COMMANDS:
        command = rest.pop(0)
        flag = "study" if command == "study" else "mode"
        if any(a == f"--{flag}" or a.startswith(f"--{flag}=") for a in rest):
            raise UsageError(f"`{command}` and --{flag} both given; give one")
        if command == "study":
            if not rest or rest[0].startswith("-"):
                raise UsageError("`study` needs the study file next: study experiments/studies/<name>.py[:arg]")
            rest[0] = f"--study={rest[0]}"
        else:
            rest.insert(0, f"--mode={command}")
    return [prog, *_resolved_files(rest)]


def _resolved_files(args: list[str]) -> list[str]:
    out = list(args)
    for i, arg in enumerate(out):
        for flag in ("--config", "--study"):
            if arg.startswith(f"{flag}="):
                out[i] = f"{flag}={_found(arg.split('=', 1)[1])}"
            elif arg == flag and i + 1 < len(out):
                out[i + 1] = _found(out[i + 1])
    return out


def _found(spec: str) -> str:
    path, colon, arg = spec.partition(":")
    return f"{find_file(path)}{colon}{arg}"


def run(argv: list[str] | None = None) -> None:
    """Parses `argv` (default `sys.argv`; a command or flags, see the module docstring) and runs it; exits with
    its status: 0, 1 for a failed run, 2 for a bad config value or command line."""
    try:
        argv = command_argv(list(sys.argv if argv is None else argv))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    for flag in flags.FLAGS.get_flags_for_module(__name__):  # --help lists the key flags of argv[0]'s module
        flags.FLAGS.register_key_flag_for_module(argv[0], flag)
    main_module = sys.modules["__main__"]
    if not main_module.__doc__:  # the console script's generated module: --help shows the commands
        main_module.__doc__ = __doc__
    app.run(main, argv=argv)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]} (commands: {', '.join(COMMANDS)})")
    from seg_jax.train.writers import QuietLibraries
    logging.get_absl_handler().addFilter(QuietLibraries())
    if _MULTIHOST.value:
        jax.distributed.initialize()
    use_compilation_cache(_COMPILATION_CACHE.value)
    if _STUDY.value:
        from seg_jax.studies.spec import StudyError
        try:
            return _study(_STUDY.value)
        except StudyError as e:  # a bad study file, argument or workdir: one line, exit status 2
            print(f"error: {e}", file=sys.stderr)
            return 2
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


def use_compilation_cache(directory: str) -> bool:
    """Turns on JAX's persistent compilation cache in `directory` for programs that took ≥ 1 s to compile; returns
    whether it did. Left alone: an empty `directory`, a cache configured already (a user's or the test suite's), and
    multi-process runs (processes that hit and miss the cache unevenly can stall each other in collectives)."""
    if not directory or jax.config.jax_compilation_cache_dir or jax.process_count() > 1:
        return False
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    return True


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
