"""Evaluators: values against NumPy on a constant predictor, a new evaluator in one class, config checks."""
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seg_jax import data, evaluators, train
from seg_jax.evaluators.base import Evaluator, summed
from seg_jax.train import steps, workdir as wd


@dataclasses.dataclass(frozen=True)
class Constant:
    """A stand-in task whose prediction is class `cls` everywhere (logits one-hot), whatever the image."""

    cls: int
    num_classes: int

    def predict(self, variables, images):
        del variables
        return jnp.broadcast_to(jax.nn.one_hot(self.cls, self.num_classes) * 10.0, (*images.shape[:3],
                                                                                     self.num_classes))


def _run(make_config, entry, task):
    config = make_config()
    dataset = data.resolve(config.data)
    ev = evaluators.EVALUATORS.get(entry["type"])("val", entry, task=task, class_names=dataset.class_names,
                                                  data_cfg=config.data)
    ev.validate(dataset)
    state = steps.replicate(_NoState())
    return ev.run(state, dataset=dataset), dataset


class _NoState:
    variables = {}


jax.tree_util.register_pytree_node(_NoState, lambda s: ((), None), lambda aux, children: _NoState())


def test_semantic_evaluator_matches_numpy_for_a_constant_prediction(make_config):
    result, dataset = _run(make_config, {"type": "semantic", "batch_size": 3}, Constant(0, 6))
    labels = np.stack([dataset.source("validation")[i]["label"] for i in range(dataset.split_sizes["validation"])])
    counted = labels != 255
    background = np.sum((labels == 0) & counted) / np.sum(counted)  # IoU of class 0: TP / (TP + FP)
    present = [c for c in range(6) if np.any(labels == c)]  # every other present class has IoU 0
    s = result.scalars
    np.testing.assert_allclose(s["val/iou/background"], background, rtol=1e-6)
    np.testing.assert_allclose(s["val/mean_iou"], background / len(present), rtol=1e-6)
    np.testing.assert_allclose(s["val/pixel_accuracy"], background, rtol=1e-6)
    assert s["val/num_images"] == len(labels)
    assert all(s[f"val/iou/{dataset.class_names[c]}"] == 0.0 for c in present[1:])
    assert set(s) == {f"val/{n}" for n in evaluators.SemanticEvaluator.scalar_names(
        evaluators.SemanticEvaluator("val", {"type": "semantic"}, task=None, class_names=dataset.class_names,
                                     data_cfg=make_config().data))}
    assert result.pictures["predictions"].dtype == np.uint8


class PredictedForeground(Evaluator):
    """A metric needing new per-device statistics: the fraction of real pixels predicted as foreground."""

    def scalar_names(self):
        return ["foreground_fraction"]

    def device_fn(self, state, batch):
        prediction = jnp.argmax(self.task.predict(state.variables, batch["image"]), -1)
        real = batch["mask"][:, None, None] * jnp.ones(prediction.shape)
        return jax.lax.psum({"fg": jnp.sum((prediction > 0) * real), "n": jnp.sum(real)}, "batch")

    def reset(self):
        self.sums = {"fg": 0.0, "n": 0.0}

    def process(self, outputs, batch):
        for k, v in summed(outputs, ("fg", "n")).items():
            self.sums[k] += v

    def evaluate(self):
        return {"foreground_fraction": self.sums["fg"] / self.sums["n"]}


def test_a_new_metric_is_one_evaluator_class_and_one_config_entry(make_config, monkeypatch):
    monkeypatch.setitem(evaluators.EVALUATORS._entries, "foreground", PredictedForeground)
    for cls, expected in ((0, 0.0), (2, 1.0)):
        result, _ = _run(make_config, {"type": "foreground", "batch_size": 5}, Constant(cls, 6))
        assert result.scalars == {"val/foreground_fraction": expected}


def test_best_metric_and_splits_are_checked_before_anything_is_written(make_config, tmp_path):
    config = make_config()
    config.train.best_metric = "val/miou"
    with pytest.raises(train.ConfigError, match="^train.best_metric: 'val/miou' is not a scalar.*valid: val/mean_iou"):
        train.train_and_evaluate(config, tmp_path / "run")
    config = make_config()
    config.evals.val.split = "valid"
    with pytest.raises(train.ConfigError, match="^evals.val.split: split 'valid'.*available splits"):
        train.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_results_table_groups_per_class_scalars():
    scalars = {"val/mean_iou": 0.5, "val/num_images": 3.0, "val/iou/a": 0.25, "val/iou/b": 0.75, "val/dice/a": 0.4,
               "val/dice/b": 0.8, "crf/mean_iou": 0.6}
    text = wd.results_table(scalars, {"val": {"mean_iou": "the mean"}}, title="t")
    assert "| mean_iou | 0.5000 |" in text and "| num_images | 3 |" in text
    assert "| class | iou | dice |" in text and "| a | 0.2500 | 0.4000 |" in text and "| b | 0.7500 | 0.8000 |" in text
    assert "### crf" in text and "- mean_iou: the mean" in text
    json.dumps(scalars)


class Unused:
    """A task the classical baselines must never call."""

    distance = False

    def predict(self, variables, images):
        raise AssertionError("source='otsu' ran the model")


def _synthetic_nuclei_batch():
    """One batch [1 device, 2 images] of bright disks on a dim, noisy background (two touching, two apart), the
    right quarter of the second image ignored; with its normalised image, labels, instances and mask."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:32, :40]
    instances = np.zeros((2, 32, 40), np.int32)
    for k, (y, x) in enumerate([(10, 10), (10, 21), (24, 30)], start=1):  # disks 1 and 2 touch
        instances[0][np.hypot(yy - y, xx - x) <= 6] = k
    instances[1][np.hypot(yy - 16, xx - 12) <= 7] = 1
    level = np.where(instances > 0, 170.0, 50.0) + rng.normal(0, 12, instances.shape)
    pixels = np.clip(np.repeat(level[..., None], 3, -1), 0, 255).astype(np.uint8)
    label = (instances > 0).astype(np.int32)
    label[1, :, 30:] = 255
    cfg = data.base_config("nuclei")
    image = (pixels.astype(np.float32) - np.asarray(cfg.mean, np.float32)) / np.asarray(cfg.std, np.float32)
    batch = {"image": image[None], "label": label[None], "instances": instances[None],
             "mask": np.ones((1, 2), np.float32), "weights": np.ones((1, 2, 32, 40), np.float32)}
    return batch, pixels, cfg


@pytest.mark.parametrize("method", ["connected_components", "watershed"])
def test_otsu_source_segments_the_image_without_the_model(method):
    from skimage import filters, measure
    from seg_jax import metrics, postprocess
    batch, pixels, cfg = _synthetic_nuclei_batch()
    options = {"method": method, "markers": "distance_peaks", "elevation": "distance", "min_distance": 4}
    entry = {"type": "instances", "source": "otsu", "num_pictures": 2, "options": options}
    ev = evaluators.EVALUATORS.get("instances")("val_otsu", entry, task=Unused(), class_names=("background",
                                                "nucleus"), data_cfg=cfg)
    result = ev.run_batches([(steps.replicate(_NoState()), batch)])
    reference = metrics.InstanceMetrics()
    for i in range(2):
        valid = batch["label"][0, i] != 255
        grey = pixels[i].astype(np.float64).mean(-1)
        foreground = (grey > filters.threshold_otsu(grey[valid])) & valid
        if method == "connected_components":
            expected = measure.label(foreground, connectivity=1)
        else:
            expected = postprocess.instances_from_semantic(np.stack([~foreground, foreground], -1).astype(np.float32),
                                                           **options)
        true = np.where(valid, batch["instances"][0, i], 0)
        np.testing.assert_array_equal(ev._pairs[i][1], expected)
        reference.add(expected, true, scores=np.ones(expected.max(), np.float32))
    want = reference.result()
    assert result.scalars["val_otsu/dsb"] == pytest.approx(want["dsb"], abs=1e-9)
    assert result.scalars["val_otsu/AJI"] == pytest.approx(want["AJI"], abs=1e-9)
    # components merge the touching pair; the distance watershed splits it
    assert ev._pairs[0][1].max() == (2 if method == "connected_components" else 3)
    assert "source" in result.definitions


def test_instances_entry_options_are_checked():
    cfg = data.base_config("nuclei")
    build = lambda **entry: evaluators.EVALUATORS.get("instances")(
        "val_instances", {"type": "instances", **entry}, task=Unused(), class_names=("a", "b"), data_cfg=cfg)
    with pytest.raises(ValueError, match="config.evals.val_instances.source: 'image' is not one of model, otsu"):
        build(source="image")
    with pytest.raises(ValueError, match="val_instances.otsu_foreground: 'pale' is not one of bright, dark"):
        build(source="otsu", otsu_foreground="pale")
    with pytest.raises(ValueError, match="val_instances.options: 'predicted_distance' markers or elevation need a "
                                         "model with a distance channel"):
        build(options={"method": "watershed", "markers": "predicted_distance"})
