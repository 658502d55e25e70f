"""Training: state, the one pmapped train step, checkpoints, logging and the loop."""
from __future__ import annotations

from seg_jax.train.loop import NonFiniteLossError, build_run, check_data, evaluate, train_and_evaluate
from seg_jax.train.workdir import ConfigMismatchError, FinishedRunError

__all__ = ["ConfigMismatchError", "FinishedRunError", "NonFiniteLossError", "build_run", "check_data", "evaluate",
           "train_and_evaluate"]
