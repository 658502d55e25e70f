"""Evaluation of a replicated state on a whole split: semantic, boundary and (optionally) CRF metrics."""
from __future__ import annotations

import functools
from typing import Callable

import jax
import ml_collections
import numpy as np

from seg_jax import data, metrics, postprocess, visualize
from seg_jax.train import detection, steps
from seg_jax.train.state import TrainState, unreplicate_to_host

_SUMMED = ("confusion", "per_image_iou_sum", "per_image_count", "boundary_correct", "boundary_total")


def make_eval_fn(config: ml_collections.ConfigDict, info: data.DatasetInfo, *, task: str = "semantic") -> Callable:
    """The pmapped eval step for `config.eval` (boundary width, optional dense CRF), or detection's predict step."""
    if task == "detection":
        return detection.pmapped_detection_predict_step()
    crf_fn = None
    crf_cfg = config.eval.get("crf", None)
    if crf_cfg is not None and crf_cfg.enabled:
        from seg_jax.postprocess.crf import dense_crf
        options = {k: v for k, v in crf_cfg.to_dict().items() if k != "enabled"}
        crf_fn = functools.partial(dense_crf, **options)
    return steps.pmapped_eval_step(
        num_classes=info.num_classes, ignore_index=info.ignore_index,
        boundary_width=int(config.eval.get("boundary_width", 3)), crf_fn=crf_fn,
        image_mean=tuple(config.data.mean), image_std=tuple(config.data.std))


class InstanceEval:
    """Instances from each eval image's probabilities (host side), scored against the true instance ids.

    Config `config.eval.instances`: `enabled`, `per_class` (instances of every class, for multi-class
    data such as `shapes`; else one foreground), and `options` for
    `seg_jax.postprocess.instances_from_semantic` (method, markers, thresholds, morphology).
    Pixels with the ignore label count as background for both prediction and truth.
    """

    def __init__(self, cfg: ml_collections.ConfigDict, *, ignore_index: int):
        if jax.process_count() > 1:
            raise NotImplementedError("instance metrics are computed on the host of a single process; "
                                      "evaluate multi-host runs with --mode=eval in one process")
        self.per_class = bool(cfg.get("per_class", False))
        self.options = cfg.get("options", ml_collections.ConfigDict()).to_dict()
        self.ignore_index = ignore_index
        self.evaluator = metrics.InstanceEvaluator()
        self.first: list[tuple[np.ndarray, np.ndarray]] = []  # (true, predicted) of the first images

    def add_batch(self, probabilities: np.ndarray, batch: dict) -> None:
        """`probabilities` `[D, b, H, W, N]` and the eval batch (with `instances`) of one step."""
        probabilities = probabilities.reshape(-1, *probabilities.shape[2:])
        labels, true, mask = (batch[k].reshape(-1, *batch[k].shape[2:]) for k in ("label", "instances", "mask"))
        for p, label, t in zip(probabilities[mask > 0], labels[mask > 0], true[mask > 0]):
            ignored = label == self.ignore_index
            p = np.where(ignored[..., None], np.eye(p.shape[-1], dtype=p.dtype)[0], p)
            t = np.where(ignored, 0, t)
            if self.per_class:
                pred, class_of = postprocess.instances_per_class(p, **self.options)
                scores = postprocess.instance_scores(p, pred, class_of_instance=class_of)
            else:
                pred = postprocess.instances_from_semantic(p, **self.options)
                scores = postprocess.instance_scores(p, pred)
            self.evaluator.add(pred, t, scores=scores)
            if len(self.first) < 16:
                self.first.append((t, pred))

    def result(self) -> dict:
        return {**self.evaluator.result(), "options": dict(self.options, per_class=self.per_class),
                "definition": metrics.INSTANCE_DEFINITIONS}


def instance_picture(images: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray]], *, n: int,
                     boxes: list[tuple[np.ndarray, np.ndarray]] | None = None, num_classes: int = 1) -> np.ndarray:
    """A grid with one row per example: image | true instances | predicted instances (one colour each);
    with detections' `(boxes, classes)`, their boxes drawn in class colours on the image and the prediction."""
    rows = []
    for i, (image, (t, p)) in enumerate(zip(images[:n], pairs[:n])):
        row = [image, visualize.colorize_instances(t), visualize.colorize_instances(p)]
        if boxes is not None:
            row[0], row[2] = (visualize.draw_boxes(x, *boxes[i], num_classes=num_classes) for x in (row[0], row[2]))
        rows.append(row)
    return visualize.grid(rows)


def _record(sums: dict, *, info: data.DatasetInfo, boundary_width: int) -> dict:
    record = metrics.summarize(sums["confusion"], class_names=info.class_names, ignore_index=info.ignore_index)
    count = int(sums["per_image_count"])
    record["per_image_mean_iou"] = float(sums["per_image_iou_sum"]) / count if count else float("nan")
    record["num_images"] = count
    total = int(sums["boundary_total"])
    record["boundary_accuracy"] = int(sums["boundary_correct"]) / total if total else float("nan")
    record["definition"]["boundary_accuracy"] = (
        f"pixel accuracy within {boundary_width} px of a change of true label (trimap accuracy)")
    return record


def evaluate_split(
    state: TrainState,
    *,
    config: ml_collections.ConfigDict,
    info: data.DatasetInfo,
    split: str,
    eval_fn: Callable,
    task: str = "semantic",
) -> tuple[dict, dict]:
    """Evaluates a replicated state on every example of `split` exactly once (`make_eval_fn`'s step).

    Returns the record (`metrics.summarize` plus per-image mIoU, boundary accuracy, `split`, a `crf`
    sub-record when the CRF is on, an `instances` sub-record when instance evaluation is on) and this
    process's first batch as numpy (images, labels, predictions, probabilities) for pictures.
    """
    if task == "detection":
        return _evaluate_detection(state, config=config, info=info, split=split, predict_fn=eval_fn)
    prefixes = [""]
    sums: dict[str, np.ndarray] = {}
    first = None
    inst_cfg = config.eval.get("instances", None)
    instances = InstanceEval(inst_cfg, ignore_index=info.ignore_index) if inst_cfg and inst_cfg.enabled else None
    if instances is not None and not info.has_instances:
        raise ValueError(f"config.eval.instances.enabled needs instance ids, and dataset {info.name!r} has none")
    for batch in data.eval_batches(config.data, split=split, global_batch_size=config.eval.batch_size,
                                   num_local_devices=jax.local_device_count(), process_index=jax.process_index(),
                                   process_count=jax.process_count()):
        out = eval_fn(state, {k: batch[k] for k in ("image", "label", "mask")})
        prefixes = [""] + (["crf/"] if "crf/confusion" in out else [])
        summed = unreplicate_to_host({p + k: out[p + k] for p in prefixes for k in _SUMMED})
        for key, value in summed.items():  # float64/int64 on the host: a split's counts can be large
            sums[key] = sums.get(key, 0) + value.astype(np.float64 if value.dtype.kind == "f" else np.int64)
        if instances is not None:
            instances.add_batch(np.asarray(out["probabilities"]), batch)
        if first is None:
            first = {k: np.asarray(v) for k, v in out.items() if k.endswith(("prediction", "probabilities"))}
            first.update({k: batch[k] for k in ("image", "label", "mask")})
            first = {k: v.reshape(-1, *v.shape[2:]) for k, v in first.items()}
    width = int(config.eval.get("boundary_width", 3))
    record = _record({k: sums[k] for k in _SUMMED}, info=info, boundary_width=width)
    if "crf/" in prefixes:
        record["crf"] = _record({k: sums["crf/" + k] for k in _SUMMED}, info=info, boundary_width=width)
        record["crf"].pop("definition")
    if instances is not None:
        record["instances"] = instances.result()
        first["instance_pairs"] = instances.first
    record["split"] = split
    return record, first


def _evaluate_detection(state, *, config, info, split, predict_fn) -> tuple[dict, dict]:
    """Mask R-CNN: COCO mask and box AP and the DSB score over every example of `split`."""
    evaluator = detection.DetectionEvaluator(ignore_index=info.ignore_index)
    first = None
    for batch in data.eval_batches(config.data, split=split, global_batch_size=config.eval.batch_size,
                                   num_local_devices=jax.local_device_count(), process_index=jax.process_index(),
                                   process_count=jax.process_count()):
        out = jax.device_get(predict_fn(state, {"image": batch["image"]}))
        flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in {**out, **batch}.items()}
        evaluator.add({k: flat[k] for k in out}, instances=flat["instances"], labels=flat["label"],
                      example_mask=flat["mask"])
        if first is None:
            keep = flat["mask"] > 0
            pred = [detection.detections_to_instances(m, v) for m, v in zip(flat["masks"][keep], flat["valid"][keep])]
            first = {"image": flat["image"], "mask": flat["mask"],
                     "instance_pairs": list(zip(flat["instances"][keep], pred)),
                     "boxes": [(b[v], c[v]) for b, c, v in zip(flat["boxes"][keep], flat["classes"][keep],
                                                               flat["valid"][keep].astype(bool))]}
    return {**evaluator.result(), "split": split, "definition": dict(detection.DETECTION_DEFINITIONS)}, first


def pictures(first: dict, *, config: ml_collections.ConfigDict, info: data.DatasetInfo) -> dict[str, np.ndarray]:
    """uint8 picture grids by name: "predictions", and "instances" when instances were evaluated."""
    out = {"predictions": prediction_picture(first, config=config, info=info)} if "prediction" in first else {}
    if first.get("instance_pairs"):
        keep = first["mask"] > 0
        n = int(config.eval.num_pictures)
        images = data.denormalize(first["image"][keep][:n], config.data)
        out["instances"] = instance_picture(images, first["instance_pairs"], n=n, boxes=first.get("boxes"),
                                            num_classes=info.num_classes)
    return out


def prediction_picture(first: dict, *, config: ml_collections.ConfigDict, info: data.DatasetInfo) -> np.ndarray:
    """A grid with one row per example: image | truth | prediction (| prediction after CRF)."""
    keep = first["mask"] > 0
    n = min(int(config.eval.num_pictures), int(keep.sum()))
    images = data.denormalize(first["image"][keep][:n], config.data)
    colour = functools.partial(visualize.colorize, num_classes=info.num_classes, ignore_index=info.ignore_index)
    rows = []
    for i in range(n):
        row = [images[i], colour(first["label"][keep][i]), colour(first["prediction"][keep][i])]
        if "crf/prediction" in first:
            row.append(colour(first["crf/prediction"][keep][i]))
        rows.append(row)
    return visualize.grid(rows)
