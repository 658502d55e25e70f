"""Mask R-CNN through the training loop, on one run (a module fixture, the suite's costliest training): it learns to a
mask AP on a user folder of easy scenes, logs every loss term, evaluates again in `--mode=eval`, and exports to the
same detections as `predict`. One run serves all of these because XLA:CPU compiles Mask R-CNN's steps slowly."""
import importlib
import json

import numpy as np
import pytest
from PIL import Image

from seg_jax import data, export, predict, train
from seg_jax.data.pipeline import augment
from seg_jax.export import exporter

STEPS = 400


def _write_square_scenes(root, count: int, size: int = 48) -> None:
    """An instance-labelled folder: 1-3 separate squares per image, class 1 reddish, class 2 greenish, on noise."""
    rng = np.random.default_rng(0)
    for directory in ("images", "labels", "instances"):
        (root / directory).mkdir(parents=True)
    colours = np.array([[60, 60, 60], [200, 60, 50], [50, 190, 70]], np.float32)
    for number in range(count):
        labels = np.zeros((size, size), np.uint8)
        instances = np.zeros((size, size), np.uint16)
        for k in range(1, rng.integers(1, 4) + 1):
            side = rng.integers(10, 17)
            for _ in range(20):  # a free place, a gap of 2 px to the others
                y, x = rng.integers(0, size - side, 2)
                if not instances[max(y - 2, 0):y + side + 2, max(x - 2, 0):x + side + 2].any():
                    instances[y:y + side, x:x + side], labels[y:y + side, x:x + side] = k, rng.integers(1, 3)
                    break
        image = np.clip(colours[labels] + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
        for directory, array in (("images", image), ("labels", labels), ("instances", instances)):
            Image.fromarray(array).save(root / directory / f"scene{number:03d}.png")


def _config(root):
    """`mask_rcnn:shapes,tiny` retargeted at the folder of 60 scenes under `root` (12 held out)."""
    config = importlib.import_module("experiments.mask_rcnn").get_config("shapes,tiny")
    config.data = data.base_config("folder")
    config.data.data_dir = str(root / "tfds")
    config.data.folder.update(images=str(root / "scenes" / "images"), labels=str(root / "scenes" / "labels"),
                              instances=str(root / "scenes" / "instances"), num_classes=3, val_fraction=0.2)
    config.data.crop_size, config.data.max_instances = (48, 48), 8
    config.train.update(steps=STEPS, batch_size=8, log_every=50, checkpoint_every=STEPS)
    config.evals.val.every = STEPS
    return config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("mask_rcnn")
    _write_square_scenes(root / "scenes", 60)
    config = _config(root)
    record = train.train_and_evaluate(config, root / "run")
    return config, root / "run", record


def test_the_config_trains_to_a_mask_ap_on_held_out_images(run):
    """(The full `:shapes` config is measured in the README: it takes minutes, not seconds.)"""
    _, _, record = run
    assert record["val/num_images"] == 12
    # measured here: mask AP 0.69 (AP50 1.0), box AP 0.68, DSB 0.61
    assert record["val/mask_AP"] >= 0.5 and record["val/mask_AP50"] >= 0.9 and record["val/box_AP"] >= 0.5, record
    for key in ("mask_AP75", "box_AP50", "dsb", "PQ", "AJI", "mean_iou"):
        assert 0.0 <= record[f"val/{key}"] <= 1.0, key


def test_the_loop_logs_every_loss_term_and_writes_pictures_and_tables(run):
    _, workdir, _ = run
    lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    train_lines = [x for x in lines if x["group"] == "train"]
    assert [x["step"] for x in train_lines] == list(range(50, STEPS + 1, 50))
    assert train_lines[-1]["train/loss"] < 0.8 * train_lines[0]["train/loss"]  # measured here: 1.27 -> 0.83
    for term in ("rpn_objectness", "rpn_box", "class", "box", "mask"):
        first, last = train_lines[0][f"train/loss/{term}"], train_lines[-1][f"train/loss/{term}"]
        assert np.isfinite(first) and np.isfinite(last), term
        # the box term may rise: as the RPN improves, more sampled RoIs are foreground and regressed
        if term in ("rpn_objectness", "class", "mask"):
            assert last < first, (term, first, last)
    assert list((workdir / "pictures").glob(f"val_instances_step{STEPS}.png"))
    assert "mask_AP" in (workdir / "results.md").read_text()


def test_eval_mode_on_a_detection_workdir_gives_the_training_scalars(run):
    # --mode=eval on a detection workdir logs and writes its own metrics (it used to look for mean_iou)
    config, workdir, record = run
    assert train.evaluate(config, workdir, which="best") == record
    assert list((workdir / "eval").glob(f"best_step{STEPS}.json"))


def test_export_gives_the_same_detections_at_a_fixed_size(run, tmp_path):
    config, workdir, _ = run
    source = data.resolve(config.data).source("validation")
    images = np.stack([source[i]["image"] for i in range(2)])
    size = images.shape[1:3]
    export.export_run(workdir, tmp_path, image_size=size)
    model = export.load_exported(tmp_path)
    assert model.input_shape == ("b", *size, 3) and model.metadata["task"] == "detection"
    predictor = predict.load_predictor(None, workdir)
    expected = predictor.predict_tiles(augment.normalize(images, mean=predictor.mean, std=predictor.std))
    assert expected["valid"].any()  # a trained model: the comparison covers real detections, not padding only
    got = model(images)
    assert sorted(got) == sorted(exporter.DETECTION_OUTPUTS)
    for name, value in got.items():
        assert value.dtype == expected[name].dtype, name
        if value.dtype == np.float32:
            np.testing.assert_allclose(value, expected[name], atol=1e-5, rtol=0, err_msg=name)
        else:
            np.testing.assert_array_equal(value, expected[name], err_msg=name)
    assert got["masks"].shape == (2, expected["scores"].shape[1], *size)
    with pytest.raises(export.ExportError, match=f"exported for height {size[0]}"):
        model(np.zeros((1, size[0] + 8, size[1], 3), np.uint8))
