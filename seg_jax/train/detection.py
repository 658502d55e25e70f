"""Mask R-CNN training and prediction steps (pmapped like `seg_jax.train.steps`) and their host-side evaluation.

Batches carry, besides ``image`` float32 ``[b, h, w, 3]``, the padded ground truth of
`seg_jax.data.detection.batched_instances_to_targets` (computed on the host after augmentation): ``boxes``
float32 ``[b, G, 4]``, ``classes`` int32 ``[b, G]``, ``masks`` uint8 ``[b, G, h, w]``, ``valid`` bool ``[b, G]``.
"""
from __future__ import annotations

import functools
from typing import Callable, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
import optax

from seg_jax import metrics
from seg_jax.data.detection import TARGET_KEYS, instances_to_targets
from seg_jax.train.state import TrainState
from seg_jax.train.steps import AXIS


def detection_train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *, model: nn.Module,
                         learning_rate_fn: optax.Schedule, loss_weights: Mapping[str, float] | None = None,
                         axis_name: str = AXIS) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimiser step on one device's shard (call under pmap), as `seg_jax.train.steps.train_step`.

    Args:
      state: replicated train state of a `MaskRCNN`.
      batch: ``image`` and the ground-truth keys of the module docstring.
      rng: the run's base key, folded with the step and the device index (anchor and RoI sampling).
      model: the `MaskRCNN` whose ``loss_terms`` is applied (BatchNorm axis ``axis_name`` if it uses BatchNorm).
      loss_weights: optional weight per loss term (`seg_jax.models.mask_rcnn.LOSS_TERMS`), default 1 each.
    Returns:
      The new state and metrics averaged over devices: ``loss`` (the weighted sum), ``loss/<term>`` for the five
      terms (each normalised over the global batch), ``learning_rate``, ``grad_norm``.
    """
    missing = [key for key in ("image", *TARGET_KEYS) if key not in batch]
    if missing:
        raise KeyError(f"detection_train_step: the batch lacks {missing}; add the ground truth of "
                       "seg_jax.data.detection.batched_instances_to_targets(batch['instances'], batch['label'], ...)")
    weights = dict(loss_weights or {})
    rng = jax.random.fold_in(jax.random.fold_in(rng, state.step), jax.lax.axis_index(axis_name))
    targets = {key: batch[key] for key in TARGET_KEYS}

    def compute_loss(params):
        terms, updates = model.apply({**state.variables, "params": params}, batch["image"], targets, key=rng,
                                     train=True, axis_name=axis_name, method=model.loss_terms,
                                     mutable=["batch_stats"])
        return sum(weights.get(name, 1.0) * value for name, value in terms.items()), (terms, updates)

    (total, (terms, updates)), grads = jax.value_and_grad(compute_loss, has_aux=True)(state.params)
    grads = jax.lax.pmean(grads, axis_name)
    new_state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", state.batch_stats))
    out = jax.lax.pmean({"loss": total, **{f"loss/{name}": value for name, value in terms.items()}}, axis_name)
    out["learning_rate"] = learning_rate_fn(state.step)
    out["grad_norm"] = optax.tree_utils.tree_norm(grads)
    return new_state, out


def detection_predict_step(state: TrainState, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Detections of one device's ``image [b, h, w, 3]`` (see `MaskRCNN.__call__`): boxes ``[b, K, 4]``, scores,
    classes, valid ``[b, K]`` and pasted mask probabilities ``[b, K, h, w]``."""
    return state.apply_fn(state.variables, batch["image"], train=False)


def pmapped_detection_train_step(**options) -> Callable:
    """`detection_train_step` bound to its options, pmapped over local devices; the state is donated."""
    return jax.pmap(functools.partial(detection_train_step, **options), axis_name=AXIS, in_axes=(0, 0, None),
                    donate_argnums=(0,))


def pmapped_detection_predict_step() -> Callable:
    return jax.pmap(detection_predict_step, axis_name=AXIS)


# ---------------------------------------------------------------------------------------------- host evaluation
def detections_to_instances(masks: np.ndarray, valid: np.ndarray, *, threshold: float = 0.5) -> np.ndarray:
    """Instance map int32 ``[H, W]`` of detections sorted by decreasing score: masks ``[K, H, W]``, valid ``[K]``.

    Detection k gets id k + 1 where its mask exceeds ``threshold``; where masks overlap the higher-scoring
    (earlier) detection wins. A detection hidden completely has no pixel left.
    """
    instances = np.zeros(masks.shape[1:], np.int32)
    for k in reversed(range(masks.shape[0])):  # lowest score first, so better detections paint over it
        if valid[k]:
            instances[masks[k] > threshold] = k + 1
    return instances


def coco_box_ap(pred_boxes: Sequence[np.ndarray], pred_scores: Sequence[np.ndarray],
                pred_classes: Sequence[np.ndarray], true_boxes: Sequence[np.ndarray],
                true_classes: Sequence[np.ndarray], *, max_detections: int = 100) -> dict[str, float]:
    """COCO box AP over images by pycocotools (`COCOeval(iouType="bbox")`), the box twin of `coco_mask_ap`.

    Args (one entry per image): pred_boxes float ``[K, 4]`` (x1, y1, x2, y2) pixels, pred_scores ``[K]``,
    pred_classes int ``[K]``; true_boxes ``[G, 4]``, true_classes ``[G]``.
    Returns:
      {"AP", "AP50", "AP75"} over all object sizes at ``max_detections``; NaN without any true box, 0 without any
      prediction.
    """
    def annotation(box, category, image_id, **extra):
        x1, y1, x2, y2 = (float(v) for v in box)
        return {"image_id": image_id, "bbox": [x1, y1, x2 - x1, y2 - y1], "category_id": int(category), **extra}

    images, truths, detections = [], [], []
    for index, (boxes, scores, classes, t_boxes, t_classes) in enumerate(
            zip(pred_boxes, pred_scores, pred_classes, true_boxes, true_classes)):
        images.append({"id": index + 1})
        for box, category in zip(t_boxes, t_classes):  # annotation ids start at 1: pycocotools reads 0 as unmatched
            area = float((box[2] - box[0]) * (box[3] - box[1]))
            truths.append(annotation(box, category, index + 1, id=len(truths) + 1, area=area, iscrowd=0))
        detections += [annotation(b, c, index + 1, score=float(s)) for b, s, c in zip(boxes, scores, classes)]
    return metrics.coco_ap(images, truths, detections, iou_type="bbox", max_detections=max_detections)


DETECTION_DEFINITIONS = {
    "mask_AP": "COCO mask AP@[.5:.95] (pycocotools), class-aware; detection masks thresholded at 0.5 and made "
               "disjoint by score; mask_AP50 / mask_AP75 at IoU 0.5 / 0.75",
    "box_AP": "COCO box AP@[.5:.95] (pycocotools), class-aware",
    "dsb": "mean over images of the DSB-2018 score of the class-agnostic instance maps",
    "truth": "every instance of the maps with a foreground class",
}


class DetectionEvaluator:
    """Accumulates Mask R-CNN detections against ground-truth instance maps, batch by batch.

    Usage::

        evaluator = DetectionEvaluator(ignore_index=255)
        for batch in eval batches:   # flattened to [N, ...]
            evaluator.add(jax.device_get(detections), instances=batch["instances"], labels=batch["label"],
                          example_mask=batch["mask"])
        evaluator.result()

    `result()` reports ``mask_AP``, ``mask_AP50``, ``mask_AP75`` (COCO mask AP by `metrics.coco_mask_ap`, detection
    masks thresholded at ``mask_threshold`` and made disjoint by score), ``box_AP``, ``box_AP50``, ``box_AP75``
    (`coco_box_ap`), both class-aware; ``dsb`` (mean `metrics.dsb_score`, class-agnostic); ``num_images``. The truth
    is every instance of the maps with a foreground class (`instances_to_targets` with no cap).
    """

    def __init__(self, *, mask_threshold: float = 0.5, ignore_index: int = 255) -> None:
        self.mask_threshold = mask_threshold
        self.ignore_index = ignore_index
        self._images: list[dict] = []

    def add(self, detections: Mapping[str, np.ndarray], *, instances: np.ndarray, labels: np.ndarray,
            example_mask: np.ndarray | None = None) -> None:
        """Adds a batch: detections ``[N, K, ...]`` (`MaskRCNN.__call__`), instance and label maps ``[N, H, W]``,
        and ``example_mask [N]`` (0 = padding example, skipped)."""
        for n in range(len(instances)):
            if example_mask is not None and not example_mask[n]:
                continue
            truth = instances_to_targets(instances[n], labels[n], max_instances=None, ignore_index=self.ignore_index)
            valid = np.asarray(detections["valid"][n], bool)
            self._images.append({
                "pred_map": detections_to_instances(np.asarray(detections["masks"][n]), valid,
                                                    threshold=self.mask_threshold),
                "scores": np.asarray(detections["scores"][n]), "classes": np.asarray(detections["classes"][n]),
                "boxes": np.asarray(detections["boxes"][n])[valid], "valid": valid,
                "true_map": np.einsum("ghw,g->hw", truth["masks"].astype(np.int32),
                                      np.arange(1, len(truth["classes"]) + 1, dtype=np.int32)),
                "true_boxes": truth["boxes"], "true_classes": truth["classes"],
            })

    def result(self) -> dict[str, float]:
        """The metrics of the class docstring (NaN APs before any image with an instance)."""
        images = self._images
        mask_ap = metrics.coco_mask_ap(
            [i["pred_map"] for i in images], [i["scores"] for i in images], [i["true_map"] for i in images],
            pred_classes=[np.concatenate([[0], i["classes"]]) for i in images],
            true_classes=[np.concatenate([[0], i["true_classes"]]) for i in images])
        box_ap = coco_box_ap([i["boxes"] for i in images], [i["scores"][i["valid"]] for i in images],
                             [i["classes"][i["valid"]] for i in images], [i["true_boxes"] for i in images],
                             [i["true_classes"] for i in images])
        dsb = [metrics.dsb_score(i["pred_map"], i["true_map"]) for i in images]
        return {**{f"mask_{k}": v for k, v in mask_ap.items()}, **{f"box_{k}": v for k, v in box_ap.items()},
                "dsb": float(np.mean(dsb)) if dsb else float("nan"), "num_images": len(images)}
