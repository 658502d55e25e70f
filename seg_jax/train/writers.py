"""Run logs: console progress, `metrics.jsonl`, and the writers of `config.logging.writers` (TensorBoard events by
default; W&B, MLflow: `seg_jax.train.trackers`); only process 0 writes."""
from __future__ import annotations

import json
import logging as std_logging
import math
import pathlib
import time
from typing import Any

import numpy as np
from absl import logging

from seg_jax.train import trackers

DEFAULT_WRITERS = ("tensorboard",)  # a config without `logging` (saved before it existed) logs as before


class MetricWriter:
    """Writes scalars and images of one run into its workdir and to the writers of `logging_cfg` (the config's
    `logging` section: `writers` and each writer's options; None = TensorBoard only).

    Resuming drops the `metrics.jsonl` records after the restored step (they are about to
    be recomputed) and says so, so the file holds each step once; a line that is not JSON (the
    last one, cut by a kill mid-write) is dropped with a warning.
    """

    def __init__(self, workdir: str | pathlib.Path, *, enabled: bool, total_steps: int, resume_step: int = 0,
                 logging_cfg: Any = None, run_name: str = "run", run_config: dict | None = None):
        self.enabled, self.total_steps = enabled, total_steps
        self.path = pathlib.Path(workdir) / "metrics.jsonl"
        self._writers: list = []
        self._t0, self._s0 = time.time(), resume_step
        if not enabled:
            return
        if self.path.exists():
            self.path.write_text("".join(line + "\n" for line in _kept_records(self.path, resume_step)))
        logging_cfg = logging_cfg or {}
        self._writers = trackers.create_writers(tuple(logging_cfg.get("writers", DEFAULT_WRITERS)), workdir,
                                                options=logging_cfg, name=run_name, run_config=run_config)

    def scalars(self, step: int, group: str, scalars: dict[str, float]) -> None:
        """One `metrics.jsonl` line `{"step", "group", **scalars}` and the finite values to every writer.

        `scalars` are flat and named with their group's prefix (`train/loss`, `val/mean_iou`, `val/iou/disc`).
        """
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "group": group, **scalars}, default=float) + "\n")
        finite = {name: float(value) for name, value in scalars.items() if math.isfinite(value)}
        for writer in self._writers:
            writer.scalars(step, finite)

    def progress(self, step: int, record: dict) -> None:
        """Console line with steps/s and ETA."""
        if not self.enabled:
            return
        elapsed = time.time() - self._t0
        rate = (step - self._s0) / elapsed if elapsed > 0 else float("nan")
        eta = (self.total_steps - step) / rate if rate > 0 else float("nan")
        extra = f"  pixel_acc {record['pixel_accuracy']:.3f}" if "pixel_accuracy" in record else ""
        logging.info("step %d/%d  loss %.4f%s  lr %.2e  %.2f steps/s  ETA %s", step, self.total_steps,
                     record["loss"], extra, record["learning_rate"], rate,
                     time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) else "?")

    def image(self, step: int, name: str, image: np.ndarray) -> None:
        """`image` uint8 `[H, W, 3]`, to every writer."""
        if self.enabled:
            for writer in self._writers:
                writer.image(step, name, image)

    def close(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers = []


def _kept_records(path: pathlib.Path, resume_step: int) -> list[str]:
    """The lines of `metrics.jsonl` up to `resume_step`; the later ones and any line that does not parse
    (a record cut short by a kill) are dropped, each kind with one log line."""
    kept, dropped = [], 0
    lines = path.read_text(errors="replace").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            step = json.loads(line)["step"]
        except (json.JSONDecodeError, KeyError, TypeError):
            where = "its last line" if number == len(lines) else f"line {number}"
            logging.warning("%s: dropping %s, which is not a complete JSON record (a write cut short?): %.80r",
                            path, where, line)
            continue
        if step <= resume_step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        logging.info("metrics.jsonl: dropping %d records after the resumed step %d", dropped, resume_step)
    return kept


class QuietLibraries(std_logging.Filter):
    """A log filter keeping every warning, and below that only the records of seg_jax's own code and of
    `own_files` (e.g. launch.py): the libraries' INFO chatter (orbax, TFDS, grain) is dropped.

    absl logs everything through one logger ('absl'), so a record is seg_jax's when its logger is `seg_jax` or
    `seg_jax.*` or its source file lies under the seg_jax package directory (the real one, not any path that
    happens to contain the word, such as a virtualenv called seg_jax).
    """

    def __init__(self, *, own_files: tuple[str | pathlib.Path, ...] = ()):
        super().__init__()
        import seg_jax
        self._package = pathlib.Path(seg_jax.__file__).resolve().parent
        self._own = {pathlib.Path(f).resolve() for f in own_files}
        self._ours: dict[str, bool] = {}  # by record.pathname: resolving paths costs system calls

    def filter(self, record: std_logging.LogRecord) -> bool:
        if "OpenCV is not installed" in str(record.msg):  # TFDS decodes PNGs with Pillow; that is fine
            return False
        if record.levelno >= std_logging.WARNING or record.name == "seg_jax" or record.name.startswith("seg_jax."):
            return True
        if record.pathname not in self._ours:
            path = pathlib.Path(record.pathname).resolve()
            self._ours[record.pathname] = path in self._own or self._package in path.parents
        return self._ours[record.pathname]
