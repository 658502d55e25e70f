"""The training loop end to end on tiny data: outputs, resume, NaN stop, relaunch protection (Mask R-CNN through the
loop: tests/test_mask_rcnn_run.py)."""
import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from seg_jax import data, train


def _params(workdir):
    """Final parameters of a run, as a flat list of numpy arrays."""
    mngr = ocp.CheckpointManager(workdir / "checkpoints")
    step = mngr.latest_step()
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    mngr.close()
    return step, [np.asarray(x) for x in jax.tree_util.tree_leaves(restored["state"]["params"])]


def test_tiny_run_writes_everything_and_refuses_to_overwrite(make_config, tmp_path):
    config = make_config()
    workdir = tmp_path / "run"
    record = train.train_and_evaluate(config, workdir)
    assert 0.0 <= record["val/mean_iou"] <= 1.0 and record["val/num_images"] == data.resolve(
        config.data).split_sizes[config.data.eval_split]
    for name in ("config.json", "metrics.jsonl", "results.json", "results.md"):
        assert (workdir / name).is_file(), name
    assert list((workdir / "pictures").glob("*.png")) and list((workdir / "tensorboard").glob("events*"))
    lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if x["group"] == "train"] == [2, 4]
    assert [x["step"] for x in lines if x["group"] == "val"] == [4]
    results = json.loads((workdir / "results.json").read_text())
    assert results["scalars"] == record
    assert results["commit"] == train.workdir.code_version()  # which code made the numbers (None outside git)
    assert "| disc |" in (workdir / "results.md").read_text()
    with pytest.raises(train.FinishedRunError, match="already holds a finished run"):
        train.train_and_evaluate(config, workdir)
    config.model.base_width = 8
    config.train.steps = 6
    with pytest.raises(train.ConfigMismatchError, match="model.base_width: 4 → 8"):
        train.train_and_evaluate(config, workdir)
    # eval mode never replaces an earlier evaluation of the same checkpoint; the CRF evaluator adds its scalars
    first = train.evaluate(make_config(), workdir)
    second = train.evaluate(make_config("default", "crf,tiny"), workdir)
    assert first["val/mean_iou"] == second["val/mean_iou"] == record["val/mean_iou"]
    assert 0.0 <= second["val_crf/mean_iou"] <= 1.0 and 0.0 <= second["val_crf/boundary_accuracy"] <= 1.0
    assert not any(k.startswith("val_crf/") for k in first)
    assert len(list((workdir / "eval").glob("*.json"))) == 2
    plain = np.asarray(Image.open(workdir / "eval" / "latest_step4_val_predictions.png"))
    crf = np.asarray(Image.open(workdir / "eval" / "latest_step4_2_val_crf_predictions.png"))
    assert crf.shape[1] > plain.shape[1]  # the CRF column
    on_test = train.evaluate(make_config(), workdir, split="train[:4]")
    assert on_test["val/num_images"] == 4 and (workdir / "eval" / "latest_step4_train_4.json").is_file()


def test_killed_run_resumes_to_the_same_result(make_config, tmp_path, monkeypatch):
    # The tiny config's 4 steps, checkpoints every 2: the compiled train step is test_tiny_run's (from the cache).
    config = make_config()
    config.evals.val.every = 2
    reference = train.train_and_evaluate(config, tmp_path / "a")

    real = data.train_batches

    def dies_at_step_3(*args, **kwargs):
        for i, batch in enumerate(real(*args, **kwargs)):
            if kwargs["start_step"] + i + 1 == 3:
                raise KeyboardInterrupt("killed")
            yield batch

    monkeypatch.setattr(data, "train_batches", dies_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train.train_and_evaluate(config, tmp_path / "b")
    monkeypatch.setattr(data, "train_batches", real)
    resumed = train.train_and_evaluate(config, tmp_path / "b")
    assert resumed == reference
    (step_a, params_a), (step_b, params_b) = _params(tmp_path / "a"), _params(tmp_path / "b")
    assert step_a == step_b == 4
    for a, b in zip(params_a, params_b):
        np.testing.assert_array_equal(a, b)
    steps = [json.loads(x)["step"] for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["group"] == "train"]
    assert steps == sorted(set(steps)), "resumed log repeats steps"


def test_nan_loss_names_the_step_and_keeps_the_last_checkpoint(make_config, tmp_path, monkeypatch):
    config = make_config()
    config.train.log_every = 100
    real = data.train_batches

    def nan_at_step_3(*args, **kwargs):
        for i, batch in enumerate(real(*args, **kwargs)):
            if kwargs["start_step"] + i + 1 == 3:
                batch = dict(batch, image=np.full_like(batch["image"], np.nan))
            yield batch

    monkeypatch.setattr(data, "train_batches", nan_at_step_3)
    with pytest.raises(train.NonFiniteLossError, match="at step 3.*step 2"):
        train.train_and_evaluate(config, tmp_path / "nan")
    step, params = _params(tmp_path / "nan")
    assert step == 2 and all(np.isfinite(p).all() for p in params)


def test_nuclei_border_targets_report_instance_metrics(make_config, tmp_path):
    config = make_config("nuclei", "border_watershed,tiny")
    record = train.train_and_evaluate(config, tmp_path / "nuclei")
    assert [k for k in record if k.startswith("val/iou/")] == ["val/iou/background", "val/iou/interior",
                                                                "val/iou/border"]
    size = data.resolve(config.data).split_sizes["validation"]
    assert record["val_instances/num_images"] == record["val/num_images"] == size
    for key in ("dsb", "mask_AP", "mask_AP50", "mask_AP75", "PQ", "AJI"):
        assert 0.0 <= record[f"val_instances/{key}"] <= 1.0, key
    assert list((tmp_path / "nuclei" / "pictures").glob("val_instances_instances_step4.png"))


def test_short_training_on_shapes_learns(make_config, tmp_path):
    # 300 steps on the 24 tiny training scenes, evaluated on the same scenes: predicting
    # background everywhere gives mIoU ≈ 0.14 and disc IoU 0; learning must beat both clearly.
    config = make_config()
    config.train.steps = config.evals.val.every = config.train.checkpoint_every = config.train.log_every = 300
    config.train.batch_size = 8
    config.model.base_width, config.model.depth = 8, 2
    config.data.eval_split = "train"
    record = train.train_and_evaluate(config, tmp_path / "learn")
    assert record["val/mean_iou"] >= 0.22, record
    assert record["val/iou/disc"] >= 0.3 and record["val/iou/background"] >= 0.85, record


def test_crf_layer_trains_its_potts_weights(make_config, tmp_path):
    config = make_config()
    config.crf_layer.enabled = True
    config.crf_layer.iterations = 2
    config.train.steps = 2
    train.train_and_evaluate(config, tmp_path / "crf")
    step, _ = _params(tmp_path / "crf")
    mngr = ocp.CheckpointManager(tmp_path / "crf" / "checkpoints")
    params = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]["params"]
    mngr.close()
    compat = float(np.asarray(params["crf"]["bilateral_compat"]))
    assert np.isfinite(compat) and compat != 10.0  # learnt from its initial value


def test_class_weights_from_label_counts_reach_the_train_step(make_config, tmp_path, monkeypatch):
    from seg_jax.train import steps
    config = make_config("imbalance", "median_frequency,tiny")
    config.train.steps = 2
    seen = {}
    real = steps.pmapped_train_step

    def spy(**options):
        seen.update(options)
        return real(**options)

    monkeypatch.setattr(steps, "pmapped_train_step", spy)
    train.train_and_evaluate(config, tmp_path / "weighted")
    # Median-frequency weights (Eigen & Fergus) recomputed here from the stored labels: freq(c) = pixels of c /
    # labelled pixels of the images in which c is present; weight = median(freq) / freq(c).
    counts, present_pixels = np.zeros(6, np.int64), np.zeros(6, np.int64)
    source = data.resolve(config.data).source("train")
    for i in range(len(source)):
        image_counts = np.bincount(source[i]["label"].ravel(), minlength=256)[:6]
        counts += image_counts
        present_pixels += np.where(image_counts > 0, image_counts.sum(), 0)
    freq = counts / present_pixels
    np.testing.assert_allclose(np.asarray(seen["task"].class_weights), np.median(freq[freq > 0]) / freq, rtol=1e-5)


def test_check_data_scans_the_training_and_evaluation_splits(make_config):
    text = train.check_data(make_config("nuclei", "border_watershed,tiny")).text()
    assert "no defects found" in text and "train: 24 examples" in text and "validation: 8 examples" in text
    assert "interior" in text and "border" in text  # the classes trained on, not the stored ones


def test_a_logged_train_line_is_the_mean_over_the_steps_since_the_last_one(tmp_path):
    from seg_jax.train import loop
    import jax.numpy as jnp

    class Writer:
        def __init__(self):
            self.lines = []

        def progress(self, step, record):
            pass

        def scalars(self, step, group, values):
            self.lines.append((step, group, values))

    writer = Writer()
    pending = [(step, {"loss": jnp.array([loss]), "learning_rate": jnp.array([lr])})
               for step, loss, lr in ((11, 1.0, 3e-3), (12, 2.0, 2e-3), (13, 6.0, 1e-3))]
    loop._flush_train_metrics(pending, writer=writer, last_good_step=10, workdir=tmp_path)
    (step, group, values), = writer.lines
    assert (step, group) == (13, "train") and pending == []
    assert values["train/loss"] == pytest.approx(3.0) and values["train/learning_rate"] == pytest.approx(1e-3)
