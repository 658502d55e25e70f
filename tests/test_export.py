"""`seg_jax.export` (issue 12 section 4): the exported function reloaded without model code gives the original
predict's outputs, for a semantic and an instance run (a Mask R-CNN run: tests/test_mask_rcnn_run.py); sizes,
overwrite, the command."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from absl import logging

from seg_jax import data, export, postprocess, predict
from seg_jax.data.pipeline import augment
from seg_jax.export import exporter
from seg_jax.predict import config as predict_config
from seg_jax.predict import predictor as predictor_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _trained(tmp_path_factory, data_dir, config_file, arg, *, steps=None):
    import importlib
    from seg_jax import train
    config = importlib.import_module(f"experiments.{config_file}").get_config(arg)
    config.data.data_dir = data_dir
    if steps is not None:  # the export needs a checkpoint, not a good model
        config.train.steps = steps
    workdir = tmp_path_factory.mktemp(config_file) / "run"
    train.train_and_evaluate(config, workdir)
    examples = data.resolve(config.data).source("train")
    return workdir, np.stack([examples[i]["image"] for i in range(2)])


@pytest.fixture(scope="module")
def semantic_run(tmp_path_factory, data_dir):
    return _trained(tmp_path_factory, data_dir, "default", "tiny")


def _original(predictor, images):
    """The restored run's probabilities on uint8 `images`, normalised on the host as `seg_jax.predict` normalises
    tiles."""
    outputs = predictor.predict_tiles(augment.normalize(images, mean=predictor.mean, std=predictor.std))
    return np.asarray(jax.nn.softmax(outputs, axis=-1))


def test_semantic_export_reloads_to_the_same_probabilities_at_any_batch_and_size(semantic_run, tmp_path):
    workdir, images = semantic_run
    assert export.export_run(workdir, tmp_path / "exported") == tmp_path / "exported"
    model = export.load_exported(tmp_path / "exported")
    predictor = predict.load_predictor(None, workdir)
    odd = np.random.default_rng(0).integers(0, 256, (3, 30, 45, 3), dtype=np.uint8)  # not multiples of 4
    for batch in (images, odd, odd[:1]):
        got = model(batch)
        assert got.dtype == np.float32 and got.shape == (*batch.shape[:3], len(predictor.class_names))
        np.testing.assert_allclose(got, _original(predictor, batch), atol=1e-5, rtol=0)

    info = json.loads((tmp_path / "exported" / "export.json").read_text())
    config = predictor_lib.run_config(None, workdir)
    assert info["class_names"] == list(data.class_names(config.data)) == list(model.class_names)
    assert info["normalization"]["mean"] == list(config.data.mean) and info["normalization"]["std"] == list(
        config.data.std)
    assert info["input"]["shape"] == ["b", "h", "w", 3] == list(model.input_shape) and info["input"]["multiple"] == 4
    assert info["task"] == "semantic" and info["postprocess"] is None and info["jax_version"] == jax.__version__
    results = json.loads((workdir / "results.json").read_text())
    assert info["source"]["step"] == config.train.steps and info["source"]["trained_commit"] == results["commit"]

    with pytest.raises(export.ExportError, match=r"uint8 RGB images \[B, H, W, 3\]; got float32"):
        model(odd.astype(np.float32))


def test_fixed_sizes_are_checked_by_the_loader(semantic_run, tmp_path):
    workdir, images = semantic_run
    export.export_run(workdir, tmp_path, image_size=(32, 32), batch=2)
    model = export.load_exported(tmp_path)
    assert model.input_shape == (2, 32, 32, 3)
    np.testing.assert_allclose(model(images), _original(predict.load_predictor(None, workdir), images), atol=1e-5,
                               rtol=0)
    with pytest.raises(export.ExportError, match="exported for width 32, got 40"):
        model(np.zeros((2, 32, 40, 3), np.uint8))
    for bad, message in [({"image_size": (0, 32)}, "image_size must be"), ({"batch": 1.5}, "batch must be")]:
        with pytest.raises(export.ExportError, match=message):
            export.export_run(workdir, tmp_path / "bad", **bad)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(export.ExportError, match="bad/model.jaxexport is missing"):
        export.load_exported(tmp_path / "bad")


def test_a_model_without_symbolic_shapes_falls_back_to_the_tile_size():
    """A stand-in model that needs concrete sides (as a model with a Python loop over rows would)."""
    def apply(variables, images):
        del variables
        return images[..., :2] * float(int(images.shape[1]) > 0)

    options = predict_config.base_config()
    options.tile_size = 16
    fake = predict.Predictor(task_name="semantic", apply=apply, variables={}, align=1, options=options,
                             class_names=("a", "b"), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                             instance_options=None, step=0)
    with pytest.MonkeyPatch.context() as patch:
        warnings = []
        patch.setattr(logging, "warning", lambda message, *args: warnings.append(message % args))
        exported = export.export_predictor(fake)
    assert exporter._dims(exported.in_avals[0].shape) == ["b", 16, 16, 3]
    assert "cannot be exported for any image size" in warnings[0] and "16 x 16" in warnings[0]


def test_command_refuses_to_overwrite_and_the_loader_imports_no_model_code(semantic_run, tmp_path):
    workdir, images = semantic_run
    out = tmp_path / "exported"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    command = [sys.executable, str(ROOT / "launch.py"), "--mode=export", f"--workdir={workdir}", f"--output={out}"]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert sorted(before) == ["export.json", "model.jaxexport"]
    with pytest.raises(export.ExportError, match=r"model.jaxexport exists; pass --overwrite"):
        export.export_run(workdir, out)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    export.export_run(workdir, out, overwrite=True)
    assert (out / "model.jaxexport").stat().st_mtime_ns != before["model.jaxexport"]

    np.save(tmp_path / "images.npy", images)
    script = (f"import sys, numpy as np\nfrom seg_jax.export.loader import load_exported\n"
              f"out = load_exported({str(out)!r})(np.load({str(tmp_path / 'images.npy')!r}))\n"
              f"np.save({str(tmp_path / 'out.npy')!r}, out)\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('seg_jax', 'flax', 'optax')))\n")
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    imported = ["seg_jax", "seg_jax.export", "seg_jax.export.loader", "seg_jax.lazy"]
    assert done.stdout.strip().splitlines()[-1] == str(imported)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"),
                               _original(predict.load_predictor(None, workdir), images), atol=1e-5, rtol=0)


def test_instance_export_gives_the_probabilities_and_post_processing_of_predict(tmp_path_factory, data_dir,
                                                                               tmp_path):
    workdir, images = _trained(tmp_path_factory, data_dir, "nuclei", "border_watershed,tiny")
    export.export_run(workdir, tmp_path)
    model = export.load_exported(tmp_path)
    config = predictor_lib.run_config(None, workdir)
    side = images.shape[1]
    config.predict.update(tile_size=side, overlap=0)  # one tile: predict_image's probabilities are the model's
    predictor = predict.load_predictor(config, workdir)
    probabilities = model(images)
    np.testing.assert_allclose(probabilities, _original(predictor, images), atol=1e-5, rtol=0)

    info = model.metadata["postprocess"]
    assert info["type"] == "instances" and [info["per_class"], info["options"]] == list(predictor.instance_options)
    assert info["options"]["method"] == "watershed"
    for image, image_probabilities in zip(images, probabilities):
        instances, scores, _ = postprocess.instances_with_scores(image_probabilities, per_class=info["per_class"],
                                                                 **info["options"])
        expected = predict.predict_image(image, predictor)
        np.testing.assert_array_equal(instances, expected.instances)
        np.testing.assert_allclose(scores, expected.scores, atol=1e-5)
