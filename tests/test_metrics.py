"""Semantic metrics against NumPy written here and hand-worked cases."""
import jax
import jax.numpy as jnp
import numpy as np

from seg_jax import metrics


def test_confusion_matrix_matches_numpy_and_jits():
    rng = np.random.default_rng(0)
    n = 5
    labels = rng.integers(0, n, size=(3, 7, 9))
    labels[rng.random(labels.shape) < 0.2] = 255
    preds = rng.integers(0, n, size=labels.shape)
    expected = np.zeros((n, n), np.int64)
    for t, p in zip(labels.ravel(), preds.ravel()):
        if t != 255:
            expected[t, p] += 1
    fn = jax.jit(lambda p, t: metrics.confusion_matrix(p, t, num_classes=n))
    np.testing.assert_array_equal(np.asarray(fn(jnp.asarray(preds), jnp.asarray(labels))), expected)


def test_iou_hand_worked_and_absent_class_rule():
    # 3 classes; class 2 never appears in truth or prediction.
    cm = np.array([[3, 1, 0],
                   [2, 4, 0],
                   [0, 0, 0]])
    # class 0: TP 3, FN 1, FP 2 → 3/6; class 1: TP 4, FN 2, FP 1 → 4/7.
    iou = metrics.iou_per_class(cm)
    np.testing.assert_allclose(iou[:2], [0.5, 4 / 7], rtol=1e-6)
    assert np.isnan(iou[2])
    np.testing.assert_allclose(metrics.mean_iou(cm), (0.5 + 4 / 7) / 2, rtol=1e-6)
    np.testing.assert_allclose(metrics.dice_per_class(cm)[:2], [6 / 9, 8 / 11], rtol=1e-6)
    np.testing.assert_allclose(metrics.pixel_accuracy(cm), 7 / 10, rtol=1e-6)


def test_per_image_differs_from_dataset_level():
    # Image A: one pixel of class 1 predicted as 0 among many class-0 pixels; image B: perfect.
    a = np.array([[99, 0], [1, 0]])
    b = np.array([[50, 0], [0, 50]])
    per_image = np.asarray(metrics.mean_iou(np.stack([a, b])))
    # A: IoU0 = 99/100, IoU1 = 0 → 0.495; B: 1.0.
    np.testing.assert_allclose(per_image, [0.495, 1.0], rtol=1e-6)
    total = a + b
    # Summed: class 0 TP 149, FN 0, FP 1 → 149/150; class 1 TP 50, FN 1 → 50/51.
    record = metrics.summarize(total, class_names=["bg", "fg"], per_image_ious=per_image)
    np.testing.assert_allclose(record["mean_iou"], (149 / 150 + 50 / 51) / 2, rtol=1e-6)
    np.testing.assert_allclose([record["iou"]["fg"], record["per_image_mean_iou"]], [50 / 51, (0.495 + 1.0) / 2], rtol=1e-6)
    assert "confusion matrix" in record["definition"]["mean_iou"] and record["definition"]["ignore_index"] == 255


def test_draw_boxes_outlines_in_class_colour():
    from seg_jax import visualize
    panel = np.zeros((6, 7, 3), np.uint8)
    out = visualize.draw_boxes(panel, np.array([[1.0, 1.0, 4.0, 5.0]]), np.array([2]), num_classes=3)
    colour = visualize.palette(3)[2]
    drawn = np.all(out == colour, -1)
    expected = np.zeros((6, 7), bool)
    expected[1, 1:4] = expected[4, 1:4] = expected[1:5, 1] = expected[1:5, 3] = True  # pixels 1..3 × 1..4
    np.testing.assert_array_equal(drawn, expected)
    assert not panel.any()  # the input is left alone
