"""orbax checkpoints of a run: the latest few (for resuming) and the best by a validation metric.

Layout in the workdir::

    checkpoints/<step>/   the newest `keep` saves; the run resumes from the newest complete one
    best/<step>/          the single best save by `best_metric`

orbax writes each save to a temporary folder and renames it when complete, so a run killed
mid-save resumes from the previous complete checkpoint.
"""
from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

from seg_jax.train.state import TrainState


def _state_tree(state: TrainState) -> dict[str, Any]:
    """The saved part of the state as host numpy arrays: identical on every process, so
    multi-host saves need no global jax.Array (orbax writes them from the primary host)."""
    return jax.device_get({"step": state.step, "params": state.params, "batch_stats": state.batch_stats,
                           "opt_state": state.opt_state})


def _args(state_tree=None, meta=None, *, restore: bool) -> ocp.args.Composite:
    if restore:
        return ocp.args.Composite(state=ocp.args.StandardRestore(state_tree), meta=ocp.args.JsonRestore())
    return ocp.args.Composite(state=ocp.args.StandardSave(state_tree), meta=ocp.args.JsonSave(meta))


def _options(name: str, *, keep: int) -> ocp.CheckpointManagerOptions:
    # Both managers may save the same step at once; without distinct prefixes their multi-host
    # barriers share a key ("_async_write_complete.<step>") and the second one fails.
    return ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True,
        multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name))


class Checkpoints:
    """The latest-`keep` and best-by-metric checkpoint managers of one workdir.

    Every process must call `save` (orbax saves collectively in multi-host runs).
    """

    def __init__(self, workdir: str | pathlib.Path, *, keep: int, best_metric: str, best_mode: str):
        if best_mode not in ("max", "min"):
            raise ValueError(f"config.train.best_mode must be 'max' or 'min', got {best_mode!r}")
        workdir = pathlib.Path(workdir).absolute()
        self.best_metric, self.best_mode = best_metric, best_mode
        self.latest = ocp.CheckpointManager(workdir / "checkpoints", options=_options("latest", keep=keep))
        self.best = ocp.CheckpointManager(workdir / "best", options=_options("best", keep=1))

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def is_better(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value > best if self.best_mode == "max" else value < best

    def save(self, state: TrainState, *, meta: dict, is_best: bool = False) -> None:
        """Saves an unreplicated state; `meta` (JSON) travels with it, e.g. the best value so far."""
        step = int(jax.device_get(state.step))
        tree = _state_tree(state)
        if is_best:  # before `latest`, so a kill in between never loses the best
            self.best.save(step, args=_args(tree, meta, restore=False), force=True)
        self.latest.save(step, args=_args(tree, meta, restore=False), force=True)

    def restore(self, state: TrainState, *, step: int | None = None, which: str = "latest") -> tuple[TrainState, dict]:
        """Restores into the structure of `state` (unreplicated); returns (state, meta)."""
        manager = self.latest if which == "latest" else self.best
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no {which} checkpoint in {manager.directory}")
        restored = manager.restore(step, args=_args(_state_tree(state), restore=True))
        tree = restored["state"]
        return state.replace(step=tree["step"], params=tree["params"], batch_stats=tree["batch_stats"],
                             opt_state=tree["opt_state"]), dict(restored["meta"])

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        self.best.close()
