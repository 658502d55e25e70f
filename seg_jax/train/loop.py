"""The training loop and stand-alone evaluation, in short named functions."""
from __future__ import annotations

import json
import math
import pathlib
from typing import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import jax_utils
from PIL import Image

from seg_jax import data
from seg_jax.data.detection import batched_instances_to_targets
from seg_jax.train import detection, steps, workdir as wd
from seg_jax.train.checkpoints import Checkpoints
from seg_jax.train.evaluation import evaluate_split, make_eval_fn, pictures
from seg_jax.train.experiment import build_experiment, class_weights_for
from seg_jax.train.state import create_train_state, unreplicate_to_host
from seg_jax.train.writers import MetricWriter


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the run stops without saving the broken state."""


def check_labels(labels: np.ndarray, *, num_classes: int, ignore_index: int, where: str) -> None:
    """Host-side check that labels lie in [0, num_classes) or equal the ignore label."""
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        raise ValueError(f"{where}: label value {int(labels[bad].flat[0])} outside [0, {num_classes}) and not the "
                         f"ignore label {ignore_index}; check the dataset's labels or config.data.num_classes")


def _setup(config: ml_collections.ConfigDict, workdir: pathlib.Path):
    info = data.prepare(config.data)
    exp = build_experiment(config, num_classes=info.num_classes)
    state = create_train_state(init_model=exp.init_model, apply_model=exp.apply_model, tx=exp.tx,
                               seed=config.seed, image_shape=tuple(config.data.crop_size))
    ckpts = Checkpoints(workdir, keep=config.train.keep_checkpoints, best_metric=config.train.best_metric,
                        best_mode=config.train.best_mode)
    return info, exp, state, ckpts


def _log_eval(writer: MetricWriter, step: int, record: dict, grids: dict[str, np.ndarray], workdir: pathlib.Path):
    if "mask_AP" in record:
        logging.info("eval %s step %d: mask AP %.4f (AP50 %.4f), box AP %.4f, DSB %.4f", record["split"], step,
                     record["mask_AP"], record["mask_AP50"], record["box_AP"], record["dsb"])
    else:
        logging.info("eval %s step %d: mIoU %.4f (per-image %.4f), pixel acc %.4f, boundary acc %.4f; IoU %s",
                     record["split"], step, record["mean_iou"], record["per_image_mean_iou"],
                     record["pixel_accuracy"], record["boundary_accuracy"],
                     ", ".join(f"{k} {v:.3f}" for k, v in record["iou"].items()))
    if "crf" in record:
        logging.info("  with dense CRF: mIoU %.4f, boundary acc %.4f", record["crf"]["mean_iou"],
                     record["crf"]["boundary_accuracy"])
    if "instances" in record:
        r = record["instances"]
        logging.info("  instances: DSB %.4f, AP %.4f, AP50 %.4f, PQ %.4f, AJI %.4f", r["dsb"], r.get("AP", np.nan),
                     r.get("AP50", np.nan), r["PQ"], r["AJI"])
    writer.scalars(step, record["split"], record)
    if writer.enabled:
        for name, picture in grids.items():
            path = workdir / "pictures" / f"{record['split']}_{name}_step{step}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(picture).save(path)
            writer.image(step, f"{record['split']}/{name}", picture)


def _flush_train_metrics(pending: list, *, writer: MetricWriter, last_good_step: int, workdir: pathlib.Path) -> None:
    """Fetches queued step metrics, stops on the first non-finite loss, logs the newest."""
    for step, m in pending:
        m = unreplicate_to_host(m)
        if not math.isfinite(float(m["loss"])):
            raise NonFiniteLossError(
                f"loss is {float(m['loss'])} at step {step}; stopped without saving. The last good checkpoint "
                f"(step {last_good_step}) in {workdir / 'checkpoints'} is intact.")
    if pending:
        step, m = pending[-1]
        record = {k: float(v) for k, v in unreplicate_to_host(m).items()}
        writer.progress(step, record)
        writer.scalars(step, "train", record)
    pending.clear()


def _due(step: int, every: int, total: int) -> bool:
    return step == total or (every > 0 and step % every == 0)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
    """Trains `config` in `workdir` (resuming from its latest checkpoint), evaluates, writes results.

    Returns the final evaluation record.
    """
    workdir = pathlib.Path(workdir)
    is_main = jax.process_index() == 0
    info, exp, state, ckpts = _setup(config, workdir)
    start = ckpts.latest_step()
    wd.check_resume(config, workdir, latest_step=start)
    meta = {}
    if start is not None:
        state, meta = ckpts.restore(state)
        logging.info("resuming %s from step %d", workdir, start)
    start = start or 0
    if is_main:
        wd.write_config(config, workdir)
    total = int(config.train.steps)
    writer = MetricWriter(workdir, enabled=is_main, total_steps=total, resume_step=start)
    class_weights = class_weights_for(config)
    if class_weights is not None:
        logging.info("class weights (%s): %s", config.class_weights, np.round(class_weights, 4).tolist())
    if exp.task == "detection":
        train_fn = detection.pmapped_detection_train_step(
            model=exp.apply_model, learning_rate_fn=exp.learning_rate_fn, loss_weights=config.loss.to_dict())
    else:
        train_fn = steps.pmapped_train_step(
            loss_fn=exp.loss_fn, learning_rate_fn=exp.learning_rate_fn,
            class_weights=None if class_weights is None else jnp.asarray(class_weights),
            ignore_index=info.ignore_index)
    eval_fn = make_eval_fn(config, info, task=exp.task)
    batches: Iterator[dict] = data.train_batches(
        config.data, global_batch_size=config.train.batch_size, seed=config.seed, start_step=start,
        num_local_devices=jax.local_device_count(), process_index=jax.process_index(),
        process_count=jax.process_count())
    rng = jax.random.PRNGKey(config.seed + 1)
    best = meta.get("best_value")
    rstate = jax_utils.replicate(state)
    try:
        record = _train_steps(rstate, range(start + 1, total + 1), batches=batches, train_fn=train_fn,
                              eval_fn=eval_fn, rng=rng, best=best, config=config, info=info, ckpts=ckpts,
                              writer=writer, workdir=workdir, last_good=start, task=exp.task)
        if record is None:  # resumed at the end: evaluate what was restored
            record, _ = evaluate_split(rstate, config=config, info=info, split=config.data.eval_split,
                                       eval_fn=eval_fn, task=exp.task)
    finally:  # also on errors: let the last good checkpoint finish writing
        ckpts.wait()
        ckpts.close()
        writer.close()
    if is_main:
        _write_results(record, workdir=workdir, step=total)
    return record


def _step_inputs(batch: dict, *, config: ml_collections.ConfigDict, info: data.DatasetInfo, task: str) -> dict:
    """What the train step of `task` reads: pixels maps, or boxes/classes/masks from the augmented instances."""
    if task == "detection":
        targets = batched_instances_to_targets(batch["instances"], batch["label"], ignore_index=info.ignore_index,
                                               max_instances=int(config.data.max_instances))
        return {"image": batch["image"], **targets}
    return {k: batch[k] for k in ("image", "label", "weights")}


def _train_steps(rstate, steps_range, *, batches, train_fn, eval_fn, rng, best, config, info, ckpts, writer,
                 workdir, last_good, task) -> dict | None:
    """Runs the steps of `steps_range`, evaluating and saving when due; returns the last eval record."""
    total = int(config.train.steps)
    is_main = jax.process_index() == 0
    pending: list = []
    record = None
    for step in steps_range:
        batch = next(batches)
        check_labels(batch["label"], num_classes=info.num_classes, ignore_index=info.ignore_index,
                     where=f"training batch of step {step} ({config.data.name})")
        rstate, m = train_fn(rstate, _step_inputs(batch, config=config, info=info, task=task), rng)
        pending.append((step, m))
        eval_now = _due(step, config.train.eval_every, total)
        save_now = _due(step, config.train.checkpoint_every, total)
        if _due(step, config.train.log_every, total) or eval_now or save_now:
            _flush_train_metrics(pending, writer=writer, last_good_step=last_good, workdir=workdir)
        is_best = False
        if eval_now:
            record, first = evaluate_split(rstate, config=config, info=info, split=config.data.eval_split,
                                           eval_fn=eval_fn, task=task)
            grids = pictures(first, config=config, info=info) if is_main else {}
            _log_eval(writer, step, record, grids, workdir)
            value = record[config.train.best_metric]
            is_best = ckpts.is_better(value, best)
            best = value if is_best else best
        if save_now or is_best:
            ckpts.save(unreplicate_to_host(rstate), meta={"best_value": best, "step": step}, is_best=is_best)
            last_good = step
    return record


def _write_results(record: dict, *, workdir: pathlib.Path, step: int) -> None:
    results = workdir / "results.json"
    if results.exists():  # a run extended with more steps: keep the earlier results beside
        old_step = json.loads(results.read_text()).get("step")
        results.rename(workdir / f"results_step{old_step}.json")
        logging.info("kept the earlier results as results_step%s.json", old_step)
    results.write_text(json.dumps({"step": step, **record}, indent=2, default=float))
    (workdir / "results.md").write_text(wd.results_table(record, title=f"{record['split']} at step {step}"))
    logging.info("results: %s", results)


def evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *, split: str | None = None,
             which: str = "latest") -> dict:
    """Evaluates the latest (or best) checkpoint of `workdir` on `split` (default config.data.eval_split).

    Writes `eval/<split>_step<N>.json` / `.md` and a picture, never replacing earlier ones.
    """
    workdir = pathlib.Path(workdir)
    info, exp, state, ckpts = _setup(config, workdir)
    state, _ = ckpts.restore(state, which=which)
    step = int(state.step)
    split = split or config.data.eval_split
    eval_fn = make_eval_fn(config, info, task=exp.task)
    record, first = evaluate_split(jax_utils.replicate(state), config=config, info=info, split=split,
                                   eval_fn=eval_fn, task=exp.task)
    record["checkpoint"] = f"{which} step {step}"
    if jax.process_index() == 0:
        base = wd.unique_path(workdir / "eval" / f"{split}_{which}_step{step}.json")
        base.write_text(json.dumps(record, indent=2, default=float))
        base.with_suffix(".md").write_text(wd.results_table(record, title=f"{split}, {which} step {step}"))
        for name, picture in pictures(first, config=config, info=info).items():
            Image.fromarray(picture).save(base.with_name(f"{base.stem}_{name}.png"))
        logging.info("eval %s (%s step %d): mIoU %.4f", split, which, step, record["mean_iou"])
    ckpts.close()
    return record
