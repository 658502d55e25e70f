"""Training: state, pure pmapped steps, checkpoints, logging and the loop."""
from __future__ import annotations

from seg_jax.train.loop import NonFiniteLossError, evaluate, train_and_evaluate
from seg_jax.train.workdir import ConfigMismatchError, FinishedRunError

__all__ = ["ConfigMismatchError", "FinishedRunError", "NonFiniteLossError", "evaluate", "train_and_evaluate"]
