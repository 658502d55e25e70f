"""Training: state, the one pmapped train step, checkpoints, logging and the loop."""
from __future__ import annotations

from seg_jax.train.checkpoints import NoCheckpointError
from seg_jax.train.loop import NonFiniteLossError, build_run, check_data, evaluate, train_and_evaluate
from seg_jax.train.validate import ConfigError, validate_config
from seg_jax.train.workdir import ConfigMismatchError, FinishedRunError, NotARunError
from seg_jax.tune.tuned import TunedExistsError

# Errors about a run's directory or config that launch.py prints as one line instead of a traceback.
RUN_ERRORS = (ConfigMismatchError, FinishedRunError, NoCheckpointError, NotARunError, TunedExistsError)

__all__ = ["RUN_ERRORS", "ConfigError", "ConfigMismatchError", "FinishedRunError", "NoCheckpointError",
           "NonFiniteLossError", "NotARunError", "build_run", "check_data", "evaluate", "train_and_evaluate",
           "validate_config"]
