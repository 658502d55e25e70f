"""Detection metrics: COCO mask and box AP and the DSB score of Mask R-CNN-style detections, image by image.

Detections are those of `seg_jax.models.MaskRCNN.__call__` (boxes ``[K, 4]``, scores, classes, valid ``[K]``, pasted
mask probabilities ``[K, H, W]``); the truth is an instance-id map with its class map.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from seg_jax.data.pipeline.detection_targets import instances_to_targets
from seg_jax.labels import IGNORE_INDEX
from seg_jax.metrics.instance import InstanceMetrics, coco_ap, coco_mask_ap, dsb_score
from seg_jax.metrics.semantic import summarize

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
    return coco_ap(images, truths, detections, iou_type="bbox", max_detections=max_detections)


DETECTION_DEFINITIONS = {
    "mask_AP": "COCO mask AP@[.5:.95] (pycocotools), class-aware; detection masks thresholded at 0.5 and made "
               "disjoint by score; mask_AP50 / mask_AP75 at IoU 0.5 / 0.75",
    "box_AP": "COCO box AP@[.5:.95] (pycocotools), class-aware",
    "dsb": "mean over images of the DSB-2018 score of the class-agnostic instance maps",
    "PQ, SQ, RQ, AJI": "as for the instances evaluator, class-agnostic, on the disjoint detection masks",
    "mean_iou, iou/<class>": "semantic metrics of the class map painted by the disjoint detection masks "
                             "(uncovered pixels: background), from one confusion matrix over the split",
    "truth": "every instance of the maps with a foreground class",
}


class DetectionMetrics:
    """Accumulates Mask R-CNN detections against ground-truth instance maps, batch by batch.

    Usage::

        metrics = DetectionMetrics()
        for batch in eval batches:   # flattened to [N, ...]
            metrics.add(jax.device_get(detections), instances=batch["instances"], labels=batch["label"],
                          example_mask=batch["mask"])
        metrics.result()

    `result()` reports ``mask_AP``, ``mask_AP50``, ``mask_AP75`` (COCO mask AP by `metrics.coco_mask_ap`, detection
    masks thresholded at ``mask_threshold`` and made disjoint by score), ``box_AP``, ``box_AP50``, ``box_AP75``
    (`coco_box_ap`), both class-aware; ``dsb`` (mean `metrics.dsb_score`), ``PQ``/``SQ``/``RQ``, ``AJI`` and their
    per-image means (`InstanceMetrics`), class-agnostic; ``num_images``. The truth is every instance of the maps with
    a foreground class (`instances_to_targets` with no cap). With ``class_names``, also the semantic metrics of the
    class map the disjoint detection masks paint (``mean_iou``, ``pixel_accuracy``, ``mean_dice``, ``iou/<class>``,
    ``dice/<class>``; pixels no detection covers are background), comparable with a semantic model's.
    """

    def __init__(self, *, mask_threshold: float = 0.5, ignore_index: int = IGNORE_INDEX,
                 class_names: Sequence[str] | None = None) -> None:
        self.mask_threshold = mask_threshold
        self.ignore_index = ignore_index
        self.class_names = tuple(class_names) if class_names is not None else None
        self._images: list[dict] = []
        n = len(self.class_names or ())
        self._confusion = np.zeros((n, n), np.int64)

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
            if self.class_names is not None:
                self._add_semantic(self._images[-1], labels[n])

    def _add_semantic(self, image: dict, labels: np.ndarray) -> None:
        """Adds the confusion of the class map painted by the detections (class of detection k at id k + 1)."""
        n = len(self.class_names)
        painted = np.concatenate([[0], image["classes"]]).astype(np.int64)[image["pred_map"]]
        labels = np.asarray(labels, np.int64)
        counted = (labels != self.ignore_index) & (labels >= 0) & (labels < n)
        self._confusion += np.bincount(labels[counted] * n + np.clip(painted[counted], 0, n - 1),
                                       minlength=n * n).reshape(n, n)

    def result(self) -> dict[str, float]:
        """The metrics of the class docstring (NaN APs before any image with an instance)."""
        images = self._images
        mask_ap = coco_mask_ap(
            [i["pred_map"] for i in images], [i["scores"] for i in images], [i["true_map"] for i in images],
            pred_classes=[np.concatenate([[0], i["classes"]]) for i in images],
            true_classes=[np.concatenate([[0], i["true_classes"]]) for i in images])
        box_ap = coco_box_ap([i["boxes"] for i in images], [i["scores"][i["valid"]] for i in images],
                             [i["classes"][i["valid"]] for i in images], [i["true_boxes"] for i in images],
                             [i["true_classes"] for i in images])
        dsb = [dsb_score(i["pred_map"], i["true_map"]) for i in images]
        instance = InstanceMetrics()
        for i in images:
            instance.add(i["pred_map"], i["true_map"])
        kept = ("PQ", "SQ", "RQ", "PQ_per_image", "AJI", "AJI_per_image")
        out = {**{f"mask_{k}": v for k, v in mask_ap.items()}, **{f"box_{k}": v for k, v in box_ap.items()},
               "dsb": float(np.mean(dsb)) if dsb else float("nan"),
               **{k: v for k, v in instance.result().items() if k in kept}, "num_images": len(images)}
        if self.class_names is not None:
            record = summarize(self._confusion, class_names=self.class_names, ignore_index=self.ignore_index)
            out.update({k: record[k] for k in ("mean_iou", "pixel_accuracy", "mean_dice")})
            for kind in ("iou", "dice"):
                out.update({f"{kind}/{name}": value for name, value in record[kind].items()})
        return out
