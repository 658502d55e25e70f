"""Scores at native resolution (issue 14 §1): with `data.eval_size` the evaluators resize the network's outputs back
to each image's native size and score against the untouched labels. Checked against jax.image.resize and Pillow, a
hand-worked case where resized-label scoring and native scoring differ, and predictions perfect at native
resolution that score 1.0 whatever the eval size (semantic, instances, detection)."""
from __future__ import annotations

import json
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from seg_jax import data, evaluators
from seg_jax.data.pipeline import augment
from seg_jax.data.pipeline.batches import EvalTransform
from seg_jax.data.sources import folder_importer
from seg_jax.evaluators import native


@flax.struct.dataclass
class Given:
    """A "state" whose `variables` are the outputs the stand-in task returns for one batch ([D, b, ...])."""

    variables: Any


class GivenTask:
    """Returns the outputs it is given in place of a network's (as `seg_jax.tune` replays them)."""

    name = "semantic"

    def predict(self, variables, images):
        del images
        return variables


def _evaluator(kind: str, class_names, data_cfg, **options):
    entry = {"type": kind, "batch_size": 4, "num_pictures": 2, **options}
    return evaluators.EVALUATORS.get(kind)("val", entry, task=GivenTask(), class_names=tuple(class_names),
                                           data_cfg=data_cfg)


# ------------------------------------------------------------------------------------------ the resize itself


@pytest.mark.parametrize("region, size", [((3, 5), (7, 11)), ((4, 4), (4, 4)), ((2, 6), (9, 6)), ((1, 3), (5, 8))])
def test_resize_region_is_bilinear_resize_of_the_cropped_region(region, size):
    values = np.random.default_rng(0).normal(size=(6, 8, 3)).astype(np.float32)
    values[region[0]:] = 1e6  # padding: must never be read
    values[:, region[1]:] = 1e6
    out = np.asarray(native.resize_region(jnp.asarray(values), region=jnp.asarray(region), size=jnp.asarray(size),
                                          shape=(10, 12)))
    cropped = values[:region[0], :region[1]]
    expected = np.asarray(jax.image.resize(cropped, (*size, 3), "bilinear"))
    np.testing.assert_allclose(out[:size[0], :size[1]], expected, atol=1e-5)
    pillow = np.stack([np.asarray(Image.fromarray(cropped[..., c], "F").resize(size[::-1], Image.BILINEAR))
                       for c in range(3)], -1)  # Pillow's triangle filter, the third opinion
    np.testing.assert_allclose(out[:size[0], :size[1]], pillow, atol=1e-4)
    np.testing.assert_array_equal(out[size[0]:, :size[1]], np.broadcast_to(out[size[0] - 1:size[0], :size[1]],
                                                                          out[size[0]:, :size[1]].shape))


def test_resize_region_by_hand():
    # [0, 1] to 4 px: centres at -0.25, 0.25, 0.75, 1.25 of the input grid; the outer two clamp to the edges.
    out = native.resize_region(jnp.asarray([[[0.0], [1.0]]]), region=jnp.asarray([1, 2]), size=jnp.asarray([1, 4]),
                               shape=(1, 5))
    np.testing.assert_allclose(np.asarray(out)[0, :, 0], [0.0, 0.25, 0.75, 1.0, 1.0])


# ------------------------------------------------------------------------------------------ what eval batches carry


def test_eval_elements_keep_the_untouched_truth_padded_to_the_native_size():
    label = np.arange(8 * 4, dtype=np.int32).reshape(8, 4) % 3
    label[0, 0] = 255
    example = {"image": np.zeros((8, 4, 3), np.uint8), "label": label, "instances": label + 10, "id": "a"}
    transform = EvalTransform(num_examples=1, eval_size=(4, 4), mean=(0.0,) * 3, std=(1.0,) * 3, ignore_index=7,
                              native_size=(9, 6))
    out = transform(0, example)
    assert out["label"].shape == (4, 4) and out["native_label"].shape == (9, 6)
    expected = np.full((9, 6), 7, np.int32)  # the run's ignore index, in the label and in the padding
    expected[:8, :4] = np.where(label == 255, 7, label)
    np.testing.assert_array_equal(out["native_label"], expected)
    assert out["native_instances"][:8, :4].tolist() == (label + 10).tolist() and not out["native_instances"][8:].any()
    assert out["native_size"].tolist() == [8, 4] and out["fitted_size"].tolist() == [4, 2]  # 8x4 fits as 4x2
    padding = transform(1, example)
    assert (padding["native_label"] == 7).all() and not padding["native_instances"].any()
    plain = EvalTransform(num_examples=1, eval_size=None, mean=(0.0,) * 3, std=(1.0,) * 3, ignore_index=7)
    assert not set(plain(0, example)) & {"native_label", "native_size", "fitted_size", "native_instances"}


@pytest.mark.parametrize("size, eval_size, fitted", [((8, 4), (4, 4), (4, 2)), ((3, 5), (4, 8), (3, 5)),
                                                     ((30, 18), (20, 10), (17, 10)), ((24, 40), (20, 10), (6, 10))])
def test_fitted_size_is_the_size_fit_and_pad_shrinks_to(size, eval_size, fitted):
    example = {"image": np.ones((*size, 3), np.uint8), "label": np.zeros(size, np.int32)}
    out = augment.fit_and_pad(example, eval_size, ignore_index=255)
    assert augment.fitted_size(*size, eval_size) == fitted
    assert out["image"].shape[:2] == tuple(eval_size)
    assert (out["label"][:fitted[0], :fitted[1]] == 0).all() and (out["label"] == 0).sum() == fitted[0] * fitted[1]


# ------------------------------------------------------------------------------------------ a hand-worked case


def _batch(elements):
    return {k: np.stack([e[k] for e in elements])[None] for k in elements[0]}  # [D = 1, b, ...]


def test_native_scoring_differs_from_resized_label_scoring_as_worked_by_hand():
    # Native label 4x4, columns 0 0 0 1. At eval size 2x2 the nearest-resized label is columns 0 1 (Pillow samples
    # columns 1 and 3), and the prediction 0 1 at eval size is perfect there: mIoU 1.
    # Upsampled bilinearly to 4 columns, the one-hot class-1 logit is 0, 0.25, 0.75, 1 (centres -0.25, 0.25, 0.75,
    # 1.25, edges clamped), so the native prediction is 0 0 1 1 against the truth 0 0 0 1 in each of the 4 rows:
    # class 0 TP 8, FN 4 -> IoU 8/12; class 1 TP 4, FP 4 -> IoU 4/8; mIoU 7/12; pixel accuracy 12/16.
    label = np.tile(np.array([0, 0, 0, 1], np.int32), (4, 1))
    example = {"image": np.zeros((4, 4, 3), np.uint8), "label": label, "id": "hand"}
    cfg = data.base_config("shapes")
    cfg.eval_size = (2, 2)
    transform = EvalTransform(num_examples=1, eval_size=(2, 2), mean=tuple(cfg.mean), std=tuple(cfg.std),
                              ignore_index=255, native_size=(4, 4))
    batch = _batch([transform(0, example)])
    assert batch["label"][0, 0].tolist() == [[0, 1], [0, 1]]
    logits = jax.nn.one_hot(np.array([[[0, 1], [0, 1]]]), 2)[None]  # [1, 1, 2, 2, 2]
    ev = _evaluator("semantic", ("a", "b"), cfg)
    scores = ev.run_batches([(Given(logits), batch)]).scalars
    np.testing.assert_allclose(scores["val/mean_iou"], 7 / 12, rtol=1e-6)
    np.testing.assert_allclose(scores["val/iou/a"], 8 / 12, rtol=1e-6)
    np.testing.assert_allclose(scores["val/iou/b"], 4 / 8, rtol=1e-6)
    np.testing.assert_allclose(scores["val/pixel_accuracy"], 12 / 16, rtol=1e-6)
    resized = {k: v for k, v in batch.items() if not k.startswith(("native", "fitted"))}  # the old scoring
    old = _evaluator("semantic", ("a", "b"), cfg).run_batches([(Given(logits), resized)]).scalars
    assert old["val/mean_iou"] == 1.0 and old["val/pixel_accuracy"] == 1.0
    assert "native resolution" in ev.DEFINITIONS["resolution"] and "2x2" in ev.DEFINITIONS["resolution"]


# ------------------------------------------------------------------------------------------ perfect at native


def _write_folder(root, shapes: dict[str, tuple[int, int]], labels_of) -> str:
    for directory in ("images", "labels", "instances"):
        os.makedirs(root / directory, exist_ok=True)
    for stem, shape in shapes.items():
        label, instances = labels_of(shape)
        Image.fromarray(np.full((*shape, 3), 90, np.uint8)).save(root / "images" / f"{stem}.png")
        Image.fromarray(label.astype(np.uint8)).save(root / "labels" / f"{stem}.png")
        Image.fromarray(instances.astype(np.uint16)).save(root / "instances" / f"{stem}.png")
    return str(root / "tfds")


def _dataset(root, shapes, labels_of, *, num_classes: int, eval_size):
    out = _write_folder(root, shapes, labels_of)
    cfg = data.base_config("folder")
    cfg.data_dir = out
    cfg.eval_size = eval_size
    cfg.eval_split = "train"
    cfg.folder.update({"images": str(root / "images"), "labels": str(root / "labels"),
                       "instances": str(root / "instances"), "num_classes": num_classes, "val_fraction": 0.0})
    return data.resolve(cfg), cfg


def _quadrants(shape):
    """Class (x >= tx) + 2 (y >= ty), thresholds between pixels; instance id = class (0 = background)."""
    height, width = shape
    y, x = np.mgrid[:height, :width]
    label = (x >= width / 2 + 0.3).astype(int) + 2 * (y >= height / 2 + 0.3)
    return label, label


def _native_coordinates(fitted: int, size: int, length: int) -> np.ndarray:
    """The native coordinate of each eval-size pixel centre (half-pixel centres)."""
    return (np.arange(length) + 0.5) * size / fitted - 0.5


def _linear_logits(batch) -> np.ndarray:
    """Eval-size logits [1, b, h, w, 4] linear in the native coordinates, whose bilinear upsampling is exact: class
    (a > 0) + 2 (b > 0) wins with a = x - tx, b = y - ty. The padding holds a huge class-3 logit that would show if
    it were read."""
    _, count, height, width, _ = batch["image"].shape
    logits = np.zeros((1, count, height, width, 4), np.float32)
    logits[..., 3] = 1e4
    for i in range(count):
        (nh, nw), (fh, fw) = batch["native_size"][0, i], batch["fitted_size"][0, i]
        b = _native_coordinates(fh, nh, fh)[:, None] - (nh / 2 + 0.3)
        a = _native_coordinates(fw, nw, fw)[None, :] - (nw / 2 + 0.3)
        logits[0, i, :fh, :fw] = np.stack(np.broadcast_arrays(0 * a * b, a + 0 * b, b + 0 * a, a + b), -1)
    return logits


@pytest.mark.parametrize("eval_size", [(12, 20), (64, 64), (20, 10), (17, 64)],
                         ids=["smaller", "larger", "mixed_aspect", "one_axis"])
def test_a_prediction_perfect_at_native_resolution_scores_one_whatever_the_eval_size(tmp_path, eval_size):
    shapes = {"wide": (24, 40), "tall": (30, 18), "square": (17, 17)}
    dataset, cfg = _dataset(tmp_path, shapes, _quadrants, num_classes=4, eval_size=eval_size)
    assert dataset.max_image_size("train") == (30, 40)
    ev = _evaluator("semantic", dataset.class_names, cfg)
    batches = list(ev.batches(dataset))
    assert [b["native_label"].shape for b in batches] == [(1, 4, 30, 40)]
    scores = ev.run_batches((Given(_linear_logits(b)), b) for b in batches).scalars
    for metric in ("mean_iou", "pixel_accuracy", "per_image_mean_iou", "boundary_accuracy", "mean_dice"):
        assert scores[f"val/{metric}"] == 1.0, metric
    assert scores["val/num_images"] == 3
    cached = json.loads(open(os.path.join(dataset.directory, "image_sizes.train.json")).read())
    assert (cached["max_height"], cached["max_width"]) == (30, 40)


def _blocks(shape):
    """Two objects on rectangles with even edges (so that a factor-2 upsampling of their one-hot maps is exact)."""
    label = np.zeros(shape, int)
    instances = np.zeros(shape, int)
    height, width = shape
    instances[2:min(8, height), 0:2] = 1
    instances[2:height - 2, 4:width] = 2
    label[instances > 0] = 1
    return label, instances


def _block_outputs(batch):
    """Eval-size one-hot logits [1, b, h, w, 2], per-object masks [1, b, 2, h, w], boxes [1, b, 2, 4] (eval-size px)
    and valid [1, b, 2] of the native objects seen at each 2x2 block (every image is shrunk by 2 or not at all)."""
    _, count, height, width, _ = batch["image"].shape
    logits = np.zeros((1, count, height, width, 2), np.float32)
    masks = np.zeros((1, count, 2, height, width), np.float32)
    boxes = np.zeros((1, count, 2, 4), np.float32)
    valid = np.zeros((1, count, 2), bool)
    for i in range(count):
        (nh, nw), (fh, fw) = batch["native_size"][0, i], batch["fitted_size"][0, i]
        step = nh // fh
        assert nh == step * fh and nw == step * fw
        objects = batch["native_instances"][0, i, :nh:step, :nw:step]
        logits[0, i, :fh, :fw] = 30.0 * np.eye(2)[(objects > 0).astype(int)]
        for k in (1, 2):
            masks[0, i, k - 1, :fh, :fw] = objects == k
            rows, cols = np.nonzero(objects == k)
            valid[0, i, k - 1] = rows.size > 0  # none in the padding example
            if rows.size:
                boxes[0, i, k - 1] = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
    return logits, masks, boxes, valid


SHRINK = {"by_two": (16, 24), "tall_by_two": (16, 8), "small": (6, 6)}


def test_instances_perfect_at_native_resolution_score_one(tmp_path):
    dataset, cfg = _dataset(tmp_path, SHRINK, _blocks, num_classes=2, eval_size=(8, 12))
    ev = _evaluator("instances", dataset.class_names, cfg)
    scores = ev.run_batches((Given(_block_outputs(b)[0]), b) for b in ev.batches(dataset)).scalars
    for metric in ("dsb", "mask_AP", "PQ", "AJI"):
        assert scores[f"val/{metric}"] == pytest.approx(1.0), metric
    assert scores["val/num_images"] == 3
    pictured = [true.shape for true, _ in ev._pairs]  # maps at native size, rows of different sizes in one figure
    assert len(pictured) == 2 and set(pictured) <= set(SHRINK.values())
    widest = max(width for _, width in pictured)
    assert ev.pictures()["instances"].shape[1] == 3 * widest + 2 * 2


def test_detections_perfect_at_native_resolution_score_one(tmp_path):
    dataset, cfg = _dataset(tmp_path, SHRINK, _blocks, num_classes=2, eval_size=(8, 12))
    ev = _evaluator("detection", dataset.class_names, cfg)

    def outputs(batch):
        _, masks, boxes, valid = _block_outputs(batch)
        count = masks.shape[1]
        return {"boxes": boxes, "masks": masks, "scores": np.full((1, count, 2), 0.9, np.float32),
                "classes": np.ones((1, count, 2), np.int32), "valid": valid}

    scores = ev.run_batches((Given(outputs(b)), b) for b in ev.batches(dataset)).scalars
    for metric in ("mask_AP", "box_AP", "dsb", "PQ", "AJI", "mean_iou"):
        assert scores[f"val/{metric}"] == pytest.approx(1.0), metric


def test_without_eval_size_batches_and_definitions_are_as_before(tmp_path):
    dataset, cfg = _dataset(tmp_path, {"a": (8, 12), "b": (8, 12)}, _blocks, num_classes=2, eval_size=None)
    ev = _evaluator("semantic", dataset.class_names, cfg)
    (batch,) = ev.batches(dataset)
    assert set(batch) == {"image", "label", "weights", "instances", "mask", "index"}
    assert ev.DEFINITIONS["resolution"].startswith("scored at each image's native resolution (data.eval_size unset")
    assert not os.path.exists(os.path.join(folder_importer.dataset_dir(cfg.data_dir), "image_sizes.train.json"))
