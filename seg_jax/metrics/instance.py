"""Instance segmentation metrics on instance maps (host-side NumPy; COCO AP through pycocotools).

Instance maps are int `[H, W]` arrays, 0 = background, any positive ids. All metrics here are class-agnostic
except `coco_mask_ap`, which takes optional per-instance classes.

Conventions:
  * Overlaps come from one joint histogram of (predicted id, true id) per image (`np.bincount`), not pair loops.
  * A predicted and a true instance match when their IoU is strictly above the threshold; for thresholds >= 0.5
    a match is necessarily one-to-one, so no assignment problem arises.
  * An image with no true and no predicted instance is a perfect answer: its per-image DSB score, PQ, SQ, RQ
    and AJI are 1.0. It adds nothing to the set-level sums of `InstanceMetrics`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
from typing import Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# The DSB IoU thresholds 0.5:0.05:0.95, as integer percentages: "IoU > t" is tested exactly as
# 100 · intersection > t% · union in integers (floats such as linspace's 0.8999999999999999 would count an
# IoU of exactly 0.9 as a hit). `DSB_THRESHOLDS` are the same values as floats (each the double nearest t).
DSB_THRESHOLD_PERCENTS = np.arange(50, 100, 5)
DSB_THRESHOLDS = DSB_THRESHOLD_PERCENTS / 100

# Stated in evaluation records beside the numbers of `InstanceMetrics.result()`.
INSTANCE_DEFINITIONS = {
    "dsb": "per image, TP / (TP + FP + FN) with matches at IoU > t, averaged over t = 0.5:0.05:0.95; then the "
           "mean over images (Data Science Bowl 2018)",
    "PQ": "SQ · RQ from TP, FP, FN and matched IoUs (IoU > 0.5) summed over the whole split; class-agnostic",
    "PQ_per_image": "PQ of each image, then the mean over images",
    "AJI": "aggregated Jaccard index (Kumar et al. 2017) with C and U summed over the whole split",
    "AJI_per_image": "AJI of each image, then the mean over images",
    "AP": "COCO mask AP@[.5:.95] (pycocotools, all areas, at most max_detections per image); AP50, AP75 alike",
    "empty_images": "an image with no true and no predicted instance scores 1.0 per image and adds nothing to "
                    "the split-level sums",
}


@dataclasses.dataclass(frozen=True)
class Overlaps:
    """Pixel counts of one image: `intersection` int64 `[P, T]` between predicted and true instances, and their
    areas `pred_area` `[P]`, `true_area` `[T]` (pixels; instances in increasing id order, background left out)."""

    intersection: np.ndarray
    pred_area: np.ndarray
    true_area: np.ndarray

    @property
    def iou(self) -> np.ndarray:
        """float64 `[P, T]` intersection over union."""
        union = self.pred_area[:, None] + self.true_area[None, :] - self.intersection
        return self.intersection / np.maximum(union, 1)


def overlaps(pred: np.ndarray, true: np.ndarray) -> Overlaps:
    """Intersections and areas of the instances of two int `[H, W]` instance maps (0 = background)."""
    pred, true = np.asarray(pred), np.asarray(true)
    if pred.shape != true.shape:
        raise ValueError(f"predicted instances {pred.shape} and true instances {true.shape} differ in shape")
    # Renumber ids 0..P and 0..T (0 stays background: np.unique sorts it first when present).
    pred_ids, pred_index = np.unique(np.concatenate([[0], pred.ravel()]), return_inverse=True)
    true_ids, true_index = np.unique(np.concatenate([[0], true.ravel()]), return_inverse=True)
    rows, cols = len(pred_ids), len(true_ids)
    joint = np.bincount(pred_index[1:] * cols + true_index[1:], minlength=rows * cols).reshape(rows, cols)
    return Overlaps(joint[1:, 1:], joint[1:].sum(axis=1), joint[:, 1:].sum(axis=0))


def _dsb(o: Overlaps) -> float:
    num_pred, num_true = o.intersection.shape
    if num_pred == 0 and num_true == 0:
        return 1.0
    union = o.pred_area[:, None] + o.true_area[None, :] - o.intersection
    tp = (100 * o.intersection[None] > DSB_THRESHOLD_PERCENTS[:, None, None] * union[None]).sum(axis=(1, 2))
    return float(np.mean(tp / (num_pred + num_true - tp)))  # TP / (TP + FP + FN), FP = P - TP, FN = T - TP


def dsb_score(pred: np.ndarray, true: np.ndarray) -> float:
    """The Data Science Bowl 2018 score of one image.

    For each IoU threshold t in 0.5, 0.55, ..., 0.95: TP / (TP + FP + FN), a TP being a predicted instance whose
    IoU with a true instance is above t, FP an unmatched prediction, FN an unmatched true instance; averaged over
    the 10 thresholds. 1.0 when both maps are empty, 0.0 when exactly one is. The competition score is the mean
    over images (`InstanceMetrics`).

    Args:
      pred, true: int `[H, W]` instance maps, 0 = background.
    """
    return _dsb(overlaps(pred, true))


@dataclasses.dataclass(frozen=True)
class _PQCounts:
    tp: int
    fp: int
    fn: int
    iou_sum: float

    def __add__(self, other: _PQCounts) -> _PQCounts:
        return _PQCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.iou_sum + other.iou_sum)


def _pq_counts(o: Overlaps) -> _PQCounts:
    matched = o.iou > 0.5
    tp = int(matched.sum())
    num_pred, num_true = o.intersection.shape
    return _PQCounts(tp, num_pred - tp, num_true - tp, float(o.iou[matched].sum()))


def _pq_from_counts(c: _PQCounts) -> dict[str, float]:
    if c.tp + c.fp + c.fn == 0:
        return {"PQ": 1.0, "SQ": 1.0, "RQ": 1.0}
    sq = c.iou_sum / c.tp if c.tp else 0.0
    rq = c.tp / (c.tp + 0.5 * c.fp + 0.5 * c.fn)
    return {"PQ": sq * rq, "SQ": sq, "RQ": rq}


def panoptic_quality(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Panoptic quality of one image, class-agnostic (Kirillov et al. 2019).

    Matches are pairs with IoU > 0.5. SQ = mean IoU of the matches (0 without matches), RQ = TP / (TP + FP/2 +
    FN/2), PQ = SQ · RQ. All 1.0 when both maps are empty.

    Args:
      pred, true: int `[H, W]` instance maps, 0 = background.

    Returns:
      {"PQ", "SQ", "RQ"} floats in [0, 1].
    """
    return _pq_from_counts(_pq_counts(overlaps(pred, true)))


def _aji_counts(o: Overlaps) -> tuple[int, int]:
    """(C, U) pixel counts of the aggregated Jaccard index."""
    num_pred, num_true = o.intersection.shape
    if num_pred == 0 or num_true == 0:
        return 0, int(o.pred_area.sum() + o.true_area.sum())
    true_index = np.arange(num_true)
    best = o.iou.argmax(axis=0)  # [T] the prediction paired with each true instance
    paired = o.intersection[best, true_index] > 0
    inter = o.intersection[best, true_index][paired]
    union = o.pred_area[best][paired] + o.true_area[paired] - inter
    unused = np.setdiff1d(np.arange(num_pred), best[paired])
    return int(inter.sum()), int(union.sum() + o.true_area[~paired].sum() + o.pred_area[unused].sum())


def _aji_from_counts(inter: int, union: int) -> float:
    return inter / union if union else 1.0


def aggregated_jaccard_index(pred: np.ndarray, true: np.ndarray) -> float:
    """Aggregated Jaccard index of one image (Kumar et al. 2017, IEEE TMI).

    Every true instance G_i is paired with the predicted instance S_j of largest IoU with it (a prediction may be
    paired with several true instances); C sums |G_i ∩ S_j| and U sums |G_i ∪ S_j| over the pairs; U also gets
    the area of every prediction paired with no true instance, and the area of every true instance that no
    prediction overlaps (such a G_i is left unpaired rather than paired with an arbitrary non-overlapping S_j).
    AJI = C / U; 1.0 when both maps are empty.

    Args:
      pred, true: int `[H, W]` instance maps, 0 = background.
    """
    return _aji_from_counts(*_aji_counts(overlaps(pred, true)))


def _instance_rles(instances: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """The ids `[K]` of an instance map and their masks as COCO run-length encodings."""
    ids = np.unique(instances)
    ids = ids[ids > 0]
    masks = np.asfortranarray((instances[..., None] == ids).astype(np.uint8))  # [H, W, K], as pycocotools wants
    return ids, (mask_utils.encode(masks) if ids.size else [])


def _mean_precision(precision: np.ndarray) -> float:
    """COCOeval's average of `precision` [T, R, K] over the entries it defines (-1 marks undefined ones)."""
    defined = precision[precision > -1]
    return float(defined.mean()) if defined.size else float("nan")


def coco_ap(images: list[dict], truths: list[dict], detections: list[dict], *, iou_type: str,
            max_detections: int) -> dict[str, float]:
    """{"AP", "AP50", "AP75"} of COCO-format annotations by pycocotools' COCOeval (`iou_type` "segm" or "bbox").

    All object sizes, at `max_detections` per image; NaN without any true object, 0 without any detection.
    """
    if not truths:
        return {"AP": float("nan"), "AP50": float("nan"), "AP75": float("nan")}
    if not detections:  # (COCO.loadRes cannot take an empty list)
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        ground_truth = COCO()
        ground_truth.dataset = {"images": images, "annotations": truths,
                                "categories": [{"id": c} for c in sorted({t["category_id"] for t in truths})]}
        ground_truth.createIndex()
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(detections), iouType=iou_type)
        # (COCO's [1, 10, 100] with 100 replaced; pycocotools sorts the list, so max_detections must be last.)
        evaluation.params.maxDets = [m for m in (1, 10) if m < max_detections] + [max_detections]
        evaluation.evaluate()
        evaluation.accumulate()
    # summarize() would read AP at a hard-coded 100 detections; index the same array it reads instead:
    # precision is [IoU threshold (.5:.05:.95), recall, class, area range (0 = all), max detections].
    precision = evaluation.eval["precision"][..., 0, -1]
    return {"AP": _mean_precision(precision), "AP50": _mean_precision(precision[0]),
            "AP75": _mean_precision(precision[5])}


def coco_mask_ap(
    pred_instances: Sequence[np.ndarray],
    pred_scores: Sequence[np.ndarray],
    true_instances: Sequence[np.ndarray],
    *,
    pred_classes: Sequence[np.ndarray] | None = None,
    true_classes: Sequence[np.ndarray] | None = None,
    max_detections: int = 100,
) -> dict[str, float]:
    """COCO mask AP over a set of images, computed by pycocotools (`COCOeval(iouType="segm")`).

    Args:
      pred_instances: per image an int `[H, W]` predicted instance map (0 = background, ids 1..K).
      pred_scores: per image float `[K]`, the confidence of instance k at entry k-1 (e.g. `instance_scores`).
      true_instances: per image an int `[H, W]` true instance map.
      pred_classes, true_classes: per image int `[K + 1]`, the class of each id (as `instances_per_class`
        returns); None makes every instance one class. AP is averaged over the classes present in the truth.
      max_detections: the most predictions per image that count (COCO's default 100).

    Returns:
      {"AP": AP@[.5:.95], "AP50", "AP75"} over all object sizes, as `COCOeval.summarize` reports them for
      `max_detections`; NaN when there is no true instance at all (AP is undefined), 0 when there is no
      prediction at all.
    """
    if not len(pred_instances) == len(pred_scores) == len(true_instances):
        raise ValueError(
            f"{len(pred_instances)} predicted maps, {len(pred_scores)} score arrays and {len(true_instances)} true"
            " maps: one of each per image is needed"
        )
    images, truths, detections = [], [], []
    for index, (pred, scores, true) in enumerate(zip(pred_instances, pred_scores, true_instances)):
        image_id = index + 1
        true, pred, scores = np.asarray(true), np.asarray(pred), np.asarray(scores)
        images.append({"id": image_id, "height": true.shape[0], "width": true.shape[1]})
        ids, rles = _instance_rles(true)
        for k, rle in zip(ids, rles):
            truths.append({
                "id": len(truths) + 1,  # pycocotools reads annotation id 0 as "unmatched": start at 1
                "image_id": image_id, "segmentation": rle, "area": float(mask_utils.area(rle)), "iscrowd": 0,
                "category_id": int(true_classes[index][k]) if true_classes is not None else 1,
            })
        ids, rles = _instance_rles(pred)
        for k, rle in zip(ids, rles):
            detections.append({
                "image_id": image_id, "segmentation": rle, "score": float(scores[k - 1]),
                "category_id": int(pred_classes[index][k]) if pred_classes is not None else 1,
            })
    return coco_ap(images, truths, detections, iou_type="segm", max_detections=max_detections)


class InstanceMetrics:
    """Accumulates instance metrics over an evaluation set, one image at a time.

    Usage::

        metrics = InstanceMetrics()
        for probabilities, true in examples:
            pred = instances_from_semantic(probabilities, ...)
            metrics.add(pred, true, scores=instance_scores(probabilities, pred))
        metrics.result()

    `result()` reports
      * `dsb`: the mean over images of `dsb_score` (the competition's definition);
      * `PQ`, `SQ`, `RQ`: set-level, from TP, FP, FN and matched IoUs summed over all images (the standard
        definition, one big image); `PQ_per_image`: the mean of per-image PQ (as in HoVer-Net's nuclei tables);
      * `AJI`: set-level, C and U summed over all images; `AJI_per_image`: the mean of per-image AJI;
      * `AP`, `AP50`, `AP75`: COCO mask AP, when scores were given for every image;
      * `num_images`.
    `INSTANCE_DEFINITIONS` states these in words for evaluation records.
    """

    def __init__(self) -> None:
        self._dsb: list[float] = []
        self._pq_per_image: list[float] = []
        self._aji_per_image: list[float] = []
        self._pq = _PQCounts(0, 0, 0, 0.0)
        self._aji = np.zeros(2, np.int64)
        self._scored: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # for COCO AP

    def add(self, pred: np.ndarray, true: np.ndarray, *, scores: np.ndarray | None = None) -> None:
        """Adds one image: int `[H, W]` instance maps and, for COCO AP, float `[K]` scores of the predictions."""
        o = overlaps(pred, true)
        self._dsb.append(_dsb(o))
        counts = _pq_counts(o)
        self._pq_per_image.append(_pq_from_counts(counts)["PQ"])
        self._pq = self._pq + counts
        inter, union = _aji_counts(o)
        self._aji += (inter, union)
        self._aji_per_image.append(_aji_from_counts(inter, union))
        if scores is not None:
            self._scored.append((np.asarray(pred), np.asarray(scores), np.asarray(true)))

    def result(self) -> dict[str, float]:
        """The metrics listed in the class docstring, as floats (NaN before any image was added)."""
        if not self._dsb:
            nan = float("nan")
            return {"num_images": 0, "dsb": nan, "PQ": nan, "SQ": nan, "RQ": nan, "PQ_per_image": nan, "AJI": nan,
                    "AJI_per_image": nan}
        inter, union = self._aji
        metrics = {
            "num_images": len(self._dsb),
            "dsb": float(np.mean(self._dsb)),
            **_pq_from_counts(self._pq),
            "PQ_per_image": float(np.mean(self._pq_per_image)),
            "AJI": _aji_from_counts(int(inter), int(union)),
            "AJI_per_image": float(np.mean(self._aji_per_image)),
        }
        if len(self._scored) == len(self._dsb):
            metrics.update(coco_mask_ap(*zip(*self._scored)))
        return metrics
