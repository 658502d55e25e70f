"""Instance metrics against hand-worked cases, pair-by-pair NumPy loops and pycocotools run directly."""
from __future__ import annotations

import contextlib
import fractions
import io

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from seg_jax.metrics.instance import (
    InstanceMetrics,
    aggregated_jaccard_index,
    coco_mask_ap,
    dsb_score,
    overlaps,
    panoptic_quality,
)


def _canvas() -> np.ndarray:
    return np.zeros((20, 24), np.int32)


def _random_instances(rng: np.random.Generator, count: int, shape: tuple[int, int] = (24, 28)) -> np.ndarray:
    instances = np.zeros(shape, np.int32)
    for k in range(1, count + 1):
        top, left = rng.integers(0, shape[0] - 4), rng.integers(0, shape[1] - 4)
        instances[top : top + rng.integers(3, 10), left : left + rng.integers(3, 10)] = k
    return instances


def _perturb(rng: np.random.Generator, instances: np.ndarray) -> np.ndarray:
    """A plausible prediction: each instance shifted by up to 1 pixel, some dropped, one spurious blob."""
    pred = np.zeros_like(instances)
    for k in np.unique(instances)[1:]:
        if rng.random() < 0.2:
            continue
        dy, dx = rng.integers(-1, 2, size=2)
        pred[np.roll(instances == k, (dy, dx), axis=(0, 1))] = k
    top, left = rng.integers(0, instances.shape[0] - 3, size=2)
    pred[top : top + 3, left : left + 3] = pred.max() + 1
    return pred


def _reference_dsb(pred: np.ndarray, true: np.ndarray) -> float:
    """Pair-by-pair loops, straight from the competition's description."""
    pred_ids, true_ids = np.unique(pred)[1:], np.unique(true)[1:]
    if not pred_ids.size and not true_ids.size:
        return 1.0
    scores = []
    for t in (fractions.Fraction(k, 20) for k in range(10, 20)):  # exact 0.5, 0.55, ..., 0.95
        tp = sum(
            1 for p in pred_ids for g in true_ids
            if fractions.Fraction(int(((pred == p) & (true == g)).sum()), int(((pred == p) | (true == g)).sum())) > t
        )
        scores.append(tp / (tp + (len(pred_ids) - tp) + (len(true_ids) - tp)))
    return float(np.mean(scores))


def test_overlaps_match_pairwise_counts():
    rng = np.random.default_rng(0)
    true = _random_instances(rng, 6)
    pred = _perturb(rng, true) * 3  # ids with gaps
    o = overlaps(pred, true)
    pred_ids, true_ids = np.unique(pred)[1:], np.unique(true)[1:]
    expected = np.array([[((pred == p) & (true == g)).sum() for g in true_ids] for p in pred_ids])
    np.testing.assert_array_equal(o.intersection, expected)
    np.testing.assert_array_equal(o.pred_area, [(pred == p).sum() for p in pred_ids])
    np.testing.assert_array_equal(o.true_area, [(true == g).sum() for g in true_ids])


def test_dsb_score_hand_cases():
    true = _canvas()
    true[2:12, 2:12] = 1  # 100 pixels
    true[14:19, 2:12] = 2  # 50 pixels
    relabelled = np.array([0, 7, 3])[true]
    assert dsb_score(relabelled, true) == 1.0  # perfect up to the ids
    assert dsb_score(_canvas(), _canvas()) == 1.0  # both empty: defined as perfect
    assert dsb_score(_canvas(), true) == 0.0
    # One missed object: TP = 1, FN = 1 at every threshold -> 1 / 2.
    assert dsb_score(np.where(true == 1, 1, 0), true) == pytest.approx(0.5)
    # Object 1 split 72 / 28 (rows 2..11, columns 2..8 has 70 pixels; add 2 of column 9): IoU 0.72 and 0.28.
    split = true.copy()
    split[2:12, 9:12] = 3
    split[2:4, 9] = 1
    # t in {0.5, ..., 0.7}: TP 2 (object 1's big part, object 2), FP 1 -> 2/3; t >= 0.75: TP 1 (object 2),
    # FP 2, FN 1 -> 1/4. Mean over the 10 thresholds: (5 · 2/3 + 5 · 1/4) / 10.
    assert dsb_score(split, true) == pytest.approx((5 * 2 / 3 + 5 * 1 / 4) / 10)
    # A 9 x 9 prediction inside the 10 x 10 object: IoU 0.81, a TP for t <= 0.8 (7 thresholds), else FP + FN.
    shrunk = np.where(true == 2, 2, 0)
    shrunk[2:11, 2:11] = 1
    assert dsb_score(shrunk, true) == pytest.approx((7 * 1 + 3 * 1 / 3) / 10)


@pytest.mark.parametrize("k", range(10, 20))
def test_dsb_iou_exactly_at_a_threshold_is_a_miss_and_just_above_a_hit(k):
    t = k / 20  # every threshold 0.5, 0.55, ..., 0.95
    true = np.zeros((10, 20), np.int32)
    true[:, :2] = 1  # 20 pixels
    pred = np.zeros_like(true)
    pred.ravel()[np.flatnonzero(true.ravel())[:k]] = 1  # k of them: IoU = k / 20 = t exactly
    # A hit (score 1) at the k - 10 thresholds below t, a miss (TP 0, FP 1, FN 1: score 0) from t on.
    assert dsb_score(pred, true) == pytest.approx((k - 10) / 10), t
    big_true = np.ones((10, 20), np.int32)  # 200 pixels
    above = np.zeros_like(big_true)
    above.ravel()[:10 * k + 1] = 1  # IoU = t + 1/200: a hit at t as well
    assert dsb_score(above, big_true) == pytest.approx((k - 9) / 10), t
    assert dsb_score(pred, true) == pytest.approx(_reference_dsb(pred, true))


def test_dsb_ten_pixel_object_with_nine_predicted_scores_point_eight():
    true = np.zeros((4, 10), np.int32)
    true[1, :] = 1
    pred = np.zeros_like(true)
    pred[1, :9] = 1  # IoU 0.9: a hit at 0.5 ... 0.85, a miss at 0.9 and 0.95
    assert dsb_score(pred, true) == pytest.approx(0.8)


def test_dsb_score_matches_pairwise_reference_on_random_maps():
    rng = np.random.default_rng(1)
    for _ in range(3):
        true = _random_instances(rng, 7)
        pred = _perturb(rng, true)
        assert dsb_score(pred, true) == pytest.approx(_reference_dsb(pred, true))


def test_panoptic_quality_hand_case():
    true = _canvas()
    true[2:12, 2:12] = 1  # A: 100 pixels
    true[14:19, 2:12] = 2  # B: 50 pixels, missed
    pred = _canvas()
    pred[2:12, 2:10] = 1  # A': 80 pixels inside A, IoU 0.8
    pred[2:6, 16:20] = 2  # a false positive
    # TP 1, FP 1, FN 1: SQ = 0.8, RQ = 1 / (1 + 0.5 + 0.5) = 0.5, PQ = 0.4.
    assert panoptic_quality(pred, true) == pytest.approx({"PQ": 0.4, "SQ": 0.8, "RQ": 0.5})
    # An IoU of exactly 0.5 is not a match: 50 of A's pixels -> TP 0, FP 1, FN 2.
    half = np.where(np.arange(24) < 7, true == 1, False).astype(np.int32)
    assert panoptic_quality(half, true) == {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0}
    assert panoptic_quality(_canvas(), _canvas()) == {"PQ": 1.0, "SQ": 1.0, "RQ": 1.0}


def test_aggregated_jaccard_index_hand_cases():
    true = _canvas()
    true[2:12, 2:12] = 1
    split = true.copy()
    split[2:12, 9:12] = 3
    split[2:4, 9] = 1  # parts of 72 and 28 pixels
    # The 72-pixel part pairs with the object: C = 72, U = 100; the unused 28-pixel part adds to U.
    assert aggregated_jaccard_index(split, true) == pytest.approx(72 / 128)
    small = _canvas()
    small[2:6, 2:6] = 1  # 16 pixels
    shifted = _canvas()
    shifted[2:6, 3:7] = 1  # overlap 12, union 20
    shifted[15:16, 10:15] = 2  # a 5-pixel false positive
    assert aggregated_jaccard_index(shifted, small) == pytest.approx(12 / 25)
    # One prediction covering two true objects pairs with both (Kumar's definition): C = 25 + 25, U = 50 + 50.
    two = _canvas()
    two[0:5, 0:5], two[0:5, 5:10] = 1, 2
    assert aggregated_jaccard_index((two > 0).astype(np.int32), two) == pytest.approx(0.5)
    # A true object that no prediction overlaps adds its area to U only: C = 16, U = 16 + 25.
    missed = small.copy()
    missed[10:15, 10:15] = 2
    assert aggregated_jaccard_index(small, missed) == pytest.approx(16 / 41)
    assert aggregated_jaccard_index(_canvas(), _canvas()) == 1.0


def test_evaluator_aggregates_over_the_set():
    first = _canvas()
    first[2:12, 2:12] = 1  # 100 pixels, predicted perfectly
    second = _canvas()
    second[2:7, 2:12] = 1  # 50 pixels, missed
    evaluator = InstanceMetrics()
    evaluator.add(first, first, scores=np.array([0.9]))
    evaluator.add(_canvas(), second, scores=np.zeros(0))
    evaluator.add(_canvas(), _canvas(), scores=np.zeros(0))  # empty image: 1.0 per image, nothing to the sums
    result = evaluator.result()
    # Set level: TP 1, FN 1, IoU sum 1 -> SQ 1, RQ 1 / 1.5; AJI C = 100, U = 100 + 50.
    assert result["PQ"] == pytest.approx(2 / 3) and result["SQ"] == 1.0 and result["RQ"] == pytest.approx(2 / 3)
    assert result["AJI"] == pytest.approx(100 / 150)
    # Per image: 1, 0, 1.
    assert result["dsb"] == pytest.approx(2 / 3)
    assert result["PQ_per_image"] == pytest.approx(2 / 3) and result["AJI_per_image"] == pytest.approx(2 / 3)
    # COCO: one true positive at score 0.9 and one missed object -> recall 1/2 with precision 1 up to it.
    assert result["AP50"] == pytest.approx(coco_mask_ap([first, _canvas()], [[0.9], []], [first, second])["AP50"])
    assert result["num_images"] == 3


def _pycocotools_directly(preds, scores, trues, pred_classes=None, true_classes=None):
    """COCO mask AP through pycocotools' documented route: a ground-truth COCO and loadRes of the detections."""
    dataset = {"images": [], "annotations": [], "categories": []}
    detections = []
    for image_id, (pred, score, true) in enumerate(zip(preds, scores, trues)):
        dataset["images"].append({"id": image_id, "height": true.shape[0], "width": true.shape[1]})
        for k in np.unique(true)[1:]:
            rle = mask_utils.encode(np.asfortranarray(true == k, dtype=np.uint8))
            category = 1 if true_classes is None else int(true_classes[image_id][k])
            dataset["annotations"].append({
                "id": len(dataset["annotations"]) + 1, "image_id": image_id, "category_id": category,
                "segmentation": rle, "area": float(mask_utils.area(rle)), "iscrowd": 0,
            })
        for k in np.unique(pred)[1:]:
            rle = mask_utils.encode(np.asfortranarray(pred == k, dtype=np.uint8))
            category = 1 if pred_classes is None else int(pred_classes[image_id][k])
            detections.append({"image_id": image_id, "category_id": category, "segmentation": rle,
                               "score": float(score[k - 1])})
    dataset["categories"] = [{"id": c} for c in sorted({a["category_id"] for a in dataset["annotations"]})]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(detections), iouType="segm")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return dict(zip(["AP", "AP50", "AP75"], evaluation.stats[:3]))


@pytest.mark.parametrize("with_classes", [False, True])
def test_coco_mask_ap_equals_pycocotools_on_random_masks(with_classes):
    rng = np.random.default_rng(2)
    trues = [_random_instances(rng, count) for count in (5, 8, 3, 6)]
    preds = [_perturb(rng, true) for true in trues]
    scores = [rng.random(pred.max()) for pred in preds]
    classes = {}
    if with_classes:  # two categories; a prediction keeps its object's class, one in five is flipped (1 <-> 2)
        true_classes = [rng.integers(1, 3, size=true.max() + 1) for true in trues]
        pred_classes = []
        for pred, kept in zip(preds, true_classes):
            kept = np.resize(kept, pred.max() + 1)  # ids are kept by _perturb; the spurious blob's is arbitrary
            pred_classes.append(np.where(rng.random(kept.size) < 0.2, 3 - kept, kept))
        classes = {"true_classes": true_classes, "pred_classes": pred_classes}
    got = coco_mask_ap(preds, scores, trues, **classes)
    expected = _pycocotools_directly(preds, scores, trues, **classes)
    assert 0.05 < expected["AP"] < 0.95  # a non-trivial case
    assert got == pytest.approx(expected, abs=1e-12)
    if not with_classes:
        # At most 2 detections per image equals feeding pycocotools each image's 2 best-scored detections.
        best = []
        for pred, score in zip(preds, scores):
            present = np.unique(pred)[1:]
            best.append(np.where(np.isin(pred, present[np.argsort(-score[present - 1])[:2]]), pred, 0))
        expected = _pycocotools_directly(best, scores, trues)
        assert coco_mask_ap(preds, scores, trues, max_detections=2) == pytest.approx(expected, abs=1e-12)
        assert expected != pytest.approx(got)


def test_coco_mask_ap_edge_cases():
    true = _canvas()
    true[2:8, 2:8] = 1
    assert coco_mask_ap([_canvas()], [np.zeros(0)], [true]) == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    assert all(np.isnan(v) for v in coco_mask_ap([true], [np.ones(1)], [_canvas()]).values())
    # An image without truth still contributes its false positives.
    both = coco_mask_ap([true, true], [np.ones(1), np.ones(1)], [true, _canvas()])
    assert both["AP50"] == pytest.approx(_pycocotools_directly([true, true], [[1.0], [1.0]], [true, _canvas()])["AP50"])
    assert both["AP50"] < 1.0
    with pytest.raises(ValueError, match="one of each per image"):
        coco_mask_ap([true], [], [true])
