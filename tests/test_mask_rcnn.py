"""Mask R-CNN: detection targets, proposals, detections, mask pasting, static shapes, and a short overfitting run."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import ndimage

from seg_jax.data.pipeline import augment
from seg_jax.data import batched_instances_to_targets, instances_to_targets
from seg_jax.models import create_model, model_options
from seg_jax.models.detection_heads import paste_masks
from seg_jax.models.mask_rcnn import LOSS_TERMS, MaskRCNN, detect, propose
from seg_jax import metrics, tasks
from seg_jax.train import steps
from seg_jax.train.state import TrainState, unreplicate_to_host

# XLA:CPU compiles threefry random ops slowly; "rbg" keys compile fast (see tests/test_models.py).
KEY = jax.random.key(0, impl="rbg")
SMALL = dict(num_classes=4, backbone_depths=(1, 1), backbone_widths=(8, 16), fpn_width=16,
             anchor_sizes=((8,), (16,)), rpn_samples=64, rpn_pre_nms_top_n=64, rpn_post_nms_top_n=32,
             roi_samples=32, box_head_width=32, mask_size=14, mask_head_convs=1, mask_head_width=16,
             max_detections=8)

# ---------------------------------------------------------------------------------------------- targets
IDS = np.array([[0, 0, 2, 2, 2, 0, 0, 0],
                [0, 0, 2, 2, 2, 0, 5, 5],
                [0, 0, 2, 2, 0, 0, 5, 5],
                [9, 0, 0, 0, 0, 0, 5, 5],
                [9, 0, 0, 0, 0, 0, 0, 0],
                [0, 0, 0, 0, 0, 0, 0, 0]], np.int32)
LABELS = np.array([[0, 0, 255, 255, 255, 0, 0, 0],    # id 2: four ignored, three of class 3, one of class 1
                   [0, 0, 255, 3, 3, 0, 0, 0],        # id 5: four background, two of class 2
                   [0, 0, 3, 1, 0, 0, 2, 2],          # id 9: background and ignore only → dropped
                   [255, 0, 0, 0, 0, 0, 0, 0],
                   [0, 0, 0, 0, 0, 0, 0, 0],
                   [0, 0, 0, 0, 0, 0, 0, 0]], np.int32)


def test_instances_to_targets_hand_case():
    t = instances_to_targets(IDS, LABELS, max_instances=3)
    np.testing.assert_array_equal(t["boxes"], [[2, 0, 5, 3], [6, 1, 8, 4], [0, 0, 0, 0]])
    np.testing.assert_array_equal(t["classes"], [3, 2, 0])
    np.testing.assert_array_equal(t["valid"], [True, True, False])
    np.testing.assert_array_equal(t["masks"], np.stack([IDS == 2, IDS == 5, np.zeros_like(IDS)]).astype(np.uint8))
    assert t["boxes"].dtype == np.float32 and t["classes"].dtype == np.int32 and t["masks"].dtype == np.uint8
    # Over the cap the largest instance stays (id 2: 8 pixels, id 5: 6).
    one = instances_to_targets(IDS, LABELS, max_instances=1)
    np.testing.assert_array_equal(one["boxes"], [[2, 0, 5, 3]])
    np.testing.assert_array_equal(one["classes"], [3])
    assert len(instances_to_targets(IDS, LABELS, max_instances=None)["valid"]) == 2


def test_batched_targets_equal_per_example_targets():
    instances = np.stack([IDS, np.where(IDS == 5, 1, 0), np.zeros_like(IDS)]).reshape(3, 1, 6, 8)
    labels = np.stack([LABELS, np.where(IDS == 5, 4, 0), LABELS]).reshape(3, 1, 6, 8)
    batched = batched_instances_to_targets(instances, labels, max_instances=2)
    assert batched["masks"].shape == (3, 1, 2, 6, 8)
    for n in range(3):
        single = instances_to_targets(instances[n, 0], labels[n, 0], max_instances=2)
        for key, value in single.items():
            np.testing.assert_array_equal(batched[key][n, 0], value)


def test_targets_follow_the_augmentation():
    """Targets are computed from the augmented maps, so boxes follow rescale, crop and flip (worked by hand)."""
    example = {"image": np.zeros((6, 8, 3), np.uint8), "label": LABELS, "instances": IDS}
    params = augment.CropParams(scale=2.0, top=2, left=4, flip=True)
    out = augment.crop_and_flip(example, params, crop_size=(6, 8), ignore_index=255)
    t = instances_to_targets(out["instances"], out["label"], max_instances=2)
    # id 2 covers x [4, 10), y [0, 6) at scale 2; the crop from (2, 4) keeps x [0, 6), y [0, 4); the flip of the
    # 8-wide crop makes x [2, 8). Id 5 (x [12, 16) at scale 2) falls outside the crop.
    np.testing.assert_array_equal(t["boxes"], [[2, 0, 8, 4], [0, 0, 0, 0]])
    np.testing.assert_array_equal(t["classes"], [3, 0])
    np.testing.assert_array_equal(t["masks"][0], out["instances"] == 2)


def test_targets_errors_name_the_input():
    with pytest.raises(ValueError, match="instance map"):
        instances_to_targets(IDS.astype(np.float32), LABELS, max_instances=2)
    with pytest.raises(ValueError, match=">= 0"):
        instances_to_targets(-IDS, LABELS, max_instances=2)


# ---------------------------------------------------------------------------------------------- pasting
def test_paste_square_roi_back_into_the_image():
    ones = jnp.ones((1, 14, 14))
    pasted = np.asarray(paste_masks(ones, jnp.array([[8.0, 4.0, 16.0, 12.0]]), height=20, width=24))[0]
    expected = np.zeros((20, 24))
    expected[4:12, 8:16] = 1.0  # exactly the pixels whose centres lie inside the box
    np.testing.assert_allclose(pasted, expected, atol=1e-6)
    # A 2 × 2 mask [[1, 0], [0, 0]] over a 4 × 4 box: pixel centres sit at mask coordinates -0.25, 0.25, 0.75, 1.25,
    # so the weight of cell 0 along each axis is 0.75, 0.75, 0.25, 0 (zero beyond the mask's edge).
    corner = paste_masks(jnp.array([[[1.0, 0.0], [0.0, 0.0]]]), jnp.array([[0.0, 0.0, 4.0, 4.0]]), height=4, width=4)
    profile = np.array([0.75, 0.75, 0.25, 0.0])
    np.testing.assert_allclose(corner[0], np.outer(profile, profile), atol=1e-6)


def test_paste_matches_scipy_bilinear_with_zero_padding():
    rng = np.random.default_rng(0)
    masks = rng.uniform(size=(3, 6, 6)).astype(np.float32)
    boxes = np.array([[2.3, 1.7, 11.2, 9.9], [-3.0, 5.0, 6.5, 20.0], [10.0, 10.0, 10.0, 14.0]], np.float32)
    got = np.asarray(paste_masks(jnp.asarray(masks), jnp.asarray(boxes), height=16, width=13))
    ys, xs = np.mgrid[0:16, 0:13] + 0.5
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        if x2 <= x1 or y2 <= y1:  # a degenerate box pastes nothing
            np.testing.assert_array_equal(got[k], 0.0)
            continue
        rows = (ys - y1) / (y2 - y1) * 6 - 0.5
        cols = (xs - x1) / (x2 - x1) * 6 - 0.5
        want = ndimage.map_coordinates(masks[k], [rows, cols], order=1, mode="grid-constant", cval=0.0)
        np.testing.assert_allclose(got[k], want, atol=1e-5)


# ---------------------------------------------------------------------------------------------- proposals, detections
def test_propose_hand_case():
    anchors = [np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32),
               np.array([[0, 0, 10, 10], [-5, -5, 5, 5]], np.float32)]
    logits = [jnp.array([3.0, 2.0, -1.0]), jnp.array([1.0, 0.0])]
    deltas = [jnp.zeros((3, 4)), jnp.zeros((2, 4))]
    boxes, scores, valid = jax.jit(lambda o, d: propose(o, d, anchors, image_size=(40, 40), pre_nms_top_n=2,
                                                        post_nms_top_n=4, nms_iou=0.5))(logits, deltas)
    # Level 0 keeps its top 2 (the third anchor is cut before NMS), then its second box (IoU 0.68) is suppressed;
    # level 1's copy of the first box survives (NMS is per level); the last anchor is clipped to the image.
    np.testing.assert_array_equal(valid, [True, True, True, False])
    np.testing.assert_allclose(boxes[:3], [[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 5, 5]])
    np.testing.assert_allclose(scores[:3], [3.0, 1.0, 0.0])


def test_detect_hand_case():
    proposals = jnp.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 70, 30], [40, 40, 50, 50]], jnp.float32)
    probabilities = np.array([[0.1, 0.7, 0.2], [0.1, 0.6, 0.3], [0.09, 0.01, 0.9], [0.0, 1.0, 0.0]])
    out = jax.jit(lambda c, d, p, v: detect(c, d, p, v, image_size=(60, 60), score_threshold=0.05, nms_iou=0.5,
                                            max_detections=4))(
        jnp.log(jnp.asarray(probabilities) + 1e-12), jnp.zeros((4, 3, 4)), proposals,
        jnp.array([True, True, True, False]))
    # Class 1: 0.7 suppresses 0.6 (IoU 0.68); class 2: 0.9 (clipped to the 60-wide image), then 0.3 suppresses 0.2;
    # 0.01 is under the threshold and the fourth proposal is padding.
    np.testing.assert_array_equal(out["valid"], [True, True, True, False])
    np.testing.assert_array_equal(out["classes"], [2, 1, 2, 0])
    np.testing.assert_allclose(out["scores"], [0.9, 0.7, 0.3, 0.0], atol=1e-5)
    np.testing.assert_allclose(out["boxes"], [[20, 20, 60, 30], [0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 0, 0]],
                               atol=1e-4)


# ---------------------------------------------------------------------------------------------- model
def test_registered_as_a_detection_model():
    model = create_model("mask_rcnn", num_classes=3, mask_size=14)
    assert isinstance(model, MaskRCNN) and MaskRCNN.task == "detection"
    assert "task" not in model_options("mask_rcnn") and "anchor_sizes" in model_options("mask_rcnn")


def test_static_shapes_for_any_image_size():
    model = MaskRCNN(**SMALL)
    images = jnp.zeros((2, 40, 36, 3))  # not multiples of the top stride (8): padded inside, outputs at 40 × 36
    variables = jax.eval_shape(model.init, KEY, images)
    out = jax.eval_shape(model.apply, variables, images)
    assert {k: (v.shape, v.dtype) for k, v in out.items()} == {
        "boxes": ((2, 8, 4), jnp.float32), "scores": ((2, 8), jnp.float32), "classes": ((2, 8), jnp.int32),
        "valid": ((2, 8), jnp.bool_), "masks": ((2, 8, 40, 36), jnp.float32)}
    targets = {"boxes": jnp.zeros((2, 5, 4)), "classes": jnp.zeros((2, 5), jnp.int32),
               "masks": jnp.zeros((2, 5, 40, 36), jnp.uint8), "valid": jnp.zeros((2, 5), bool)}
    terms = jax.eval_shape(lambda v: model.apply(v, images, targets, key=KEY, method=model.loss_terms), variables)
    assert {k: v.shape for k, v in terms.items()} == {name: () for name in LOSS_TERMS}


def test_config_errors_name_the_option():
    images = jnp.zeros((1, 32, 32, 3))
    with pytest.raises(ValueError, match="anchor_sizes"):
        jax.eval_shape(MaskRCNN(**{**SMALL, "anchor_sizes": ((8,),)}).init, KEY, images)
    with pytest.raises(ValueError, match="mask_size=13"):
        jax.eval_shape(MaskRCNN(**{**SMALL, "mask_size": 13}).init, KEY, images)
    task = tasks.DetectionTask(model=MaskRCNN(**SMALL), weights={}, max_instances=4, ignore_index=255)
    with pytest.raises(KeyError, match="boxes.*DetectionTargets"):
        task.loss({}, {"image": images, "classes": None, "masks": None, "valid": None}, KEY, axis_name=None)


# ---------------------------------------------------------------------------------------------- evaluation
def test_box_ap_hand_case():
    boxes = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)]
    # Class 1 found exactly; the class-2 object is detected with the wrong class: AP 1 for class 1, 0 for class 2.
    ap = metrics.coco_box_ap(boxes, [np.array([0.9, 0.8])], [np.array([1, 1])], boxes, [np.array([1, 2])])
    assert ap == pytest.approx({"AP": 0.5, "AP50": 0.5, "AP75": 0.5})


def test_detections_to_instances_prefers_higher_scores():
    masks = np.zeros((3, 4, 4), np.float32)
    masks[0, :2] = 0.9   # best detection: top half
    masks[1, 1:] = 0.8   # overlaps it on row 1, loses there
    masks[2] = 1.0       # invalid slot: ignored
    got = metrics.detections_to_instances(masks, np.array([True, True, False]))
    np.testing.assert_array_equal(got, [[1] * 4, [1] * 4, [2] * 4, [2] * 4])


def test_detection_metrics_paint_a_class_map_for_semantic_scores():
    # 4 x 4 image: a class-1 object in the left two columns, a class-2 object in the right column.
    labels = np.zeros((1, 4, 4), np.int32)
    labels[0, :, :2], labels[0, :, 3] = 1, 2
    instances = np.zeros((1, 4, 4), np.int32)
    instances[0, :, :2], instances[0, :, 3] = 1, 2
    masks = np.zeros((1, 2, 4, 4), np.float32)
    masks[0, 0, :, :2] = 0.9       # detection 0: class 1, exactly the left object
    masks[0, 1, :, 2:] = 0.8       # detection 1: class 2, the right object plus the background column 2
    detections = {"masks": masks, "valid": np.ones((1, 2), bool), "classes": np.array([[1, 2]]),
                  "scores": np.array([[0.9, 0.8]]), "boxes": np.array([[[0, 0, 2, 4], [2, 0, 4, 4]]], np.float32)}
    m = metrics.DetectionMetrics(class_names=("background", "a", "b"))
    m.add(detections, instances=instances, labels=labels)
    result = m.result()
    # background: 4 true pixels, all predicted b -> IoU 0; a: 8/8 -> 1; b: TP 4, FP 4 -> 0.5
    assert result["iou/background"] == 0.0 and result["iou/a"] == 1.0 and result["iou/b"] == 0.5
    assert result["mean_iou"] == pytest.approx(0.5) and result["pixel_accuracy"] == pytest.approx(12 / 16)
    # instance IoUs 1 and 0.5; a match needs IoU > 0.5: TP 1 (IoU 1), FP 1, FN 1 -> SQ 1, RQ 1 / (1 + 1/2 + 1/2)
    assert result["SQ"] == 1.0 and result["RQ"] == pytest.approx(0.5) and result["PQ"] == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------- overfitting run
def _scenes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two 32 × 32 images, each with a square of class 1 (reddish) and one of class 2 (greenish)."""
    instances = np.zeros((2, 32, 32), np.int32)
    labels = np.zeros((2, 32, 32), np.int32)
    squares = [[(3, 13, 4, 14, 1), (16, 28, 15, 27, 2)], [(4, 12, 18, 26, 2), (17, 29, 3, 15, 1)]]
    for n, image_squares in enumerate(squares):
        for k, (r0, r1, c0, c1, c) in enumerate(image_squares):
            instances[n, r0:r1, c0:c1], labels[n, r0:r1, c0:c1] = k + 1, c
    colours = np.array([[0, 0, 0], [1.5, -1, 0], [-1, 1.5, 0]], np.float32)
    noise = 0.1 * np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    return colours[labels] + noise, instances, labels


STEPS = 150


@pytest.fixture(scope="module")
def overfit():
    """Trains SMALL (4 classes; class 3 never occurs) with the pmapped step on the two scenes, then predicts."""
    images, instances, labels = _scenes()
    targets = batched_instances_to_targets(instances, labels, max_instances=4)
    batch = {"image": images[None], **{k: v[None] for k, v in targets.items()}}  # [D = 1, b = 2, ...]
    model = MaskRCNN(**SMALL)
    schedule = optax.cosine_decay_schedule(3e-3, STEPS, alpha=0.05)
    params = jax.jit(model.init)(KEY, jnp.asarray(images))["params"]
    state = steps.replicate(TrainState.create(apply_fn=model.apply, params=params, batch_stats={},
                                                  tx=optax.adam(schedule)))
    task = tasks.DetectionTask(model=model, weights={name: 1.0 for name in LOSS_TERMS}, max_instances=4,
                               ignore_index=255)
    train = steps.pmapped_train_step(task=task, learning_rate_fn=schedule)
    history = []
    for _ in range(STEPS):
        state, step_metrics = train(state, batch, KEY)
        history.append(step_metrics)
    history = {k: np.array([float(m[k][0]) for m in jax.device_get(history)]) for k in history[0]}
    detections = jax.device_get(jax.pmap(lambda s, x: task.predict(s.variables, x))(state, images[None]))
    detections = {k: v[0] for k, v in detections.items()}
    detection_metrics = metrics.DetectionMetrics()
    detection_metrics.add(detections, instances=instances, labels=labels)
    return {"history": history, "detections": detections, "metrics": detection_metrics.result(), "initial": params,
            "final": unreplicate_to_host(state.params)}



def test_training_lowers_every_loss_term(overfit):
    history = overfit["history"]
    for name in ["loss"] + [f"loss/{term}" for term in LOSS_TERMS]:
        first, last = history[name][:10].mean(), history[name][-10:].mean()
        assert last < 0.5 * first, (name, first, last)


def test_overfitting_reaches_mask_ap(overfit):
    m = overfit["metrics"]
    assert m["num_images"] == 2
    assert m["mask_AP"] >= 0.8 and m["mask_AP50"] == 1.0, m
    assert m["box_AP50"] == 1.0 and m["dsb"] >= 0.6, m


def test_mask_loss_trains_only_ground_truth_class_channels(overfit):
    """The mask head's last layer has one channel per class; only classes 1 and 2 ever are a RoI's true class.

    Adam leaves a parameter exactly unchanged while its gradient is zero, so the background and class-3 channels
    must keep their initial values while the class-1 and class-2 channels move.
    """
    before, after = (p["mask_head"]["logits"] for p in (overfit["initial"], overfit["final"]))
    for name in ("kernel", "bias"):
        changed = np.any(np.asarray(before[name]) != np.asarray(after[name]), axis=tuple(range(before[name].ndim - 1)))
        np.testing.assert_array_equal(changed, [False, True, True, False], err_msg=name)


def test_detections_are_sorted_padded_and_masked(overfit):
    d = overfit["detections"]
    assert d["boxes"].shape == (2, 8, 4) and d["masks"].shape == (2, 8, 32, 32)
    for n in range(2):
        valid = d["valid"][n]
        count = int(valid.sum())
        assert count >= 2 and valid[:count].all() and not valid[count:].any()  # valid slots first
        assert np.all(np.diff(d["scores"][n][:count]) <= 0)                      # by decreasing score
        assert not d["masks"][n][~valid].any() and not d["scores"][n][~valid].any()
        assert set(d["classes"][n][:count]) <= {1, 2, 3}
