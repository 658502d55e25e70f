"""Run logs: console progress, TensorBoard events, `metrics.jsonl`; only process 0 writes."""
from __future__ import annotations

import json
import math
import pathlib
import time

import numpy as np
from absl import logging


class MetricWriter:
    """Writes scalars and images of one run into its workdir.

    Resuming drops the `metrics.jsonl` records after the restored step (they are about to
    be recomputed) and says so, so the file holds each step once.
    """

    def __init__(self, workdir: str | pathlib.Path, *, enabled: bool, total_steps: int, resume_step: int = 0):
        self.enabled, self.total_steps = enabled, total_steps
        self.path = pathlib.Path(workdir) / "metrics.jsonl"
        self._tb = None
        self._t0, self._s0 = time.time(), resume_step
        if not enabled:
            return
        if self.path.exists():
            kept, dropped = [], 0
            for line in self.path.read_text().splitlines():
                if line.strip() and json.loads(line)["step"] <= resume_step:
                    kept.append(line)
                elif line.strip():
                    dropped += 1
            if dropped:
                logging.info("metrics.jsonl: dropping %d records after the resumed step %d", dropped, resume_step)
            self.path.write_text("".join(line + "\n" for line in kept))
        from tensorboardX import SummaryWriter  # imported here: only process 0 needs it
        self._tb = SummaryWriter(str(pathlib.Path(workdir) / "tensorboard"))

    def scalars(self, step: int, group: str, scalars: dict[str, float]) -> None:
        """One `metrics.jsonl` line `{"step", "group", **scalars}` and a TensorBoard scalar per finite value.

        `scalars` are flat and named with their group's prefix (`train/loss`, `val/mean_iou`, `val/iou/disc`).
        """
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "group": group, **scalars}, default=float) + "\n")
        for name, value in scalars.items():
            if math.isfinite(value):
                self._tb.add_scalar(name, value, step)
        self._tb.flush()

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
        """`image` uint8 `[H, W, 3]`."""
        if self.enabled:
            self._tb.add_image(name, image, step, dataformats="HWC")
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
