"""orbax checkpoints of a run: the latest few (for resuming) and the best by a validation metric.

Layout in the workdir::

    checkpoints/<step>/   the newest `keep` saves; the run resumes from the newest complete one
    best/<step>/          the single best save by `best_metric`

orbax writes each save to a temporary folder and renames it when complete, so a run killed
mid-save resumes from the previous complete checkpoint. A committed checkpoint that cannot be read
(files deleted or damaged later) is skipped with a warning naming its directory, and moved to
`unreadable/checkpoints/<step>` when resuming, so the run saves that step again; only when no
checkpoint can be read does `restore_readable` fail, naming each one.
"""
from __future__ import annotations

import pathlib
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

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


class NoCheckpointError(FileNotFoundError):
    """The workdir has no checkpoint, or none that can be read."""


def _options(name: str, *, keep: int, create: bool) -> ocp.CheckpointManagerOptions:
    # Both managers may save the same step at once; without distinct prefixes their multi-host
    # barriers share a key ("_async_write_complete.<step>") and the second one fails.
    return ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=create,
        multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name))


class Checkpoints:
    """The latest-`keep` and best-by-metric checkpoint managers of one workdir.

    Every process must call `save` (orbax saves collectively in multi-host runs). `create=False` (evaluation)
    never creates the `checkpoints/` and `best/` folders.
    """

    def __init__(self, workdir: str | pathlib.Path, *, keep: int, best_metric: str, best_mode: str,
                 create: bool = True):
        if best_mode not in ("max", "min"):
            raise ValueError(f"config.train.best_mode must be 'max' or 'min', got {best_mode!r}")
        self.workdir = workdir = pathlib.Path(workdir).absolute()
        self.best_metric, self.best_mode = best_metric, best_mode
        self.latest = ocp.CheckpointManager(workdir / "checkpoints", options=_options("latest", keep=keep,
                                                                                   create=create))
        self.best = ocp.CheckpointManager(workdir / "best", options=_options("best", keep=1, create=create))

    def manager(self, which: str) -> ocp.CheckpointManager:
        if which not in ("latest", "best"):
            raise ValueError(f"which must be 'latest' or 'best', got {which!r}")
        return self.latest if which == "latest" else self.best

    def steps(self, which: str = "latest") -> list[int]:
        """The committed steps of `which`, oldest first (readable or not)."""
        return sorted(self.manager(which).all_steps())

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
        # before `latest`, so a kill in between never loses the best; a resumed run that recomputes a step
        # saved as best before the kill recomputes the same state, which is kept as it is
        if is_best and step not in self.best.all_steps():
            self.best.save(step, args=_args(tree, meta, restore=False), force=True)
        self.latest.save(step, args=_args(tree, meta, restore=False), force=True)

    def restore(self, state: TrainState, *, step: int | None = None, which: str = "latest") -> tuple[TrainState, dict]:
        """Restores into the structure of `state` (unreplicated); returns (state, meta)."""
        manager = self.manager(which)
        step = manager.latest_step() if step is None else step
        if step is None:
            raise NoCheckpointError(f"no {which} checkpoint in {manager.directory}")
        restored = manager.restore(step, args=_args(_state_tree(state), restore=True))
        tree = restored["state"]
        return state.replace(step=tree["step"], params=tree["params"], batch_stats=tree["batch_stats"],
                             opt_state=tree["opt_state"]), dict(restored["meta"])

    def restore_readable(self, state: TrainState, *, which: str = "latest",
                         move_unreadable: bool = False) -> tuple[TrainState, dict, int] | None:
        """The newest checkpoint of `which` that can be read: `(state, meta, step)`, or None when there is none.

        Each newer one that cannot be read is skipped with a warning naming its directory; `move_unreadable`
        (resuming, process 0) moves it to `<workdir>/unreadable/<checkpoints|best>/<step>` so the step can be
        saved again.

        Raises:
            NoCheckpointError: checkpoints exist and none can be read (the message names each one and why).
        """
        manager = self.manager(which)
        failures = []
        for step in sorted(manager.all_steps(), reverse=True):
            try:
                restored = self.restore(state, step=step, which=which)
            except Exception as e:  # orbax raises many kinds (missing files, tensorstore, JSON, tree structure)
                directory = pathlib.Path(manager.directory) / str(step)
                reason = " ".join(str(e).split())[:200]
                logging.warning("checkpoint %s cannot be read (%s: %s); trying the previous one", directory,
                                type(e).__name__, reason)
                failures.append((step, directory, f"{type(e).__name__}: {reason}"))
                continue
            if move_unreadable and failures:
                self._move_aside(manager, failures)
            return (*restored, step)
        if failures:
            raise NoCheckpointError(f"no readable {which} checkpoint in {manager.directory}: " + "; ".join(
                f"{directory} ({reason})" for _, directory, reason in failures))
        return None

    def _move_aside(self, manager: ocp.CheckpointManager, failures: list) -> None:
        if jax.process_index() == 0:
            for step, directory, _ in failures:
                target = self.workdir / "unreadable" / directory.parent.name / str(step)
                n = 1
                while target.exists():
                    n += 1
                    target = target.with_name(f"{step}_{n}")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(directory), str(target))
                logging.warning("moved the unreadable checkpoint %s to %s", directory, target)
        if jax.process_count() > 1:  # every process lists the steps again only after the move
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("seg_jax_unreadable_checkpoints_moved")
        manager.reload()

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def open_for_reading(workdir: str | pathlib.Path, config: Any, *, which: str, purpose: str) -> Checkpoints:
    """The checkpoints of an existing run (nothing is created), after checking that it has a `which` checkpoint;
    the caller restores and closes. `purpose` completes the error: "evaluate", "predict with", "export"."""
    workdir = pathlib.Path(workdir)
    ckpts = Checkpoints(workdir, keep=config.train.keep_checkpoints, best_metric=config.train.best_metric,
                        best_mode=config.train.best_mode, create=False)
    if not ckpts.steps(which):
        ckpts.close()
        folder = workdir / ("checkpoints" if which == "latest" else "best")
        raise NoCheckpointError(f"{workdir} has no {which} checkpoint to {purpose} ({folder} is missing or empty); "
                                "train it first")
    return ckpts


def read_run_variables(workdir: str | pathlib.Path) -> tuple[dict[str, Any], int]:
    """The variables of a run's newest checkpoint, read as saved (no model needed): `({"params": ..., "batch_stats":
    ...}, step)`, host numpy arrays, `batch_stats` left out for a model without BatchNorm. For a run that starts from
    another run's weights (`train.init_from`).

    Raises:
        NoCheckpointError: `workdir` has no checkpoint, or its newest cannot be read (the message names the folder).
    """
    folder = pathlib.Path(workdir).absolute() / "checkpoints"
    if not folder.is_dir():
        raise NoCheckpointError(f"{folder} does not exist: {workdir} is not a seg_jax run directory, or it has not "
                                "saved a checkpoint yet")
    manager = ocp.CheckpointManager(folder, options=ocp.CheckpointManagerOptions(create=False))
    try:
        step = manager.latest_step()
        if step is None:
            raise NoCheckpointError(f"{folder} holds no checkpoint: train {workdir} first")
        try:
            tree = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                                 meta=ocp.args.JsonRestore()))["state"]
        except Exception as e:  # orbax raises many kinds (missing files, tensorstore, JSON)
            raise NoCheckpointError(f"{folder / str(step)} cannot be read ({type(e).__name__}: "
                                    f"{' '.join(str(e).split())[:200]})") from None
    finally:
        manager.close()
    variables = {"params": tree["params"]}
    if tree.get("batch_stats"):
        variables["batch_stats"] = tree["batch_stats"]
    return variables, int(step)
