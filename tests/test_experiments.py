"""Every config under experiments/ builds: its model, task, loss, optimiser, evaluators and data names all exist."""
import importlib
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from seg_jax import data, evaluators
from seg_jax.models import fcn, layers, mask_rcnn, unet
from seg_jax.train.experiment import build_experiment

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted(p.stem for p in (ROOT / "experiments").glob("*.py")
                      if hasattr(importlib.import_module(f"experiments.{p.stem}"), "get_config"))
CASES = [(name, arg) for name in CONFIG_FILES
         for arg in importlib.import_module(f"experiments.{name}").ARGS]


@pytest.mark.parametrize("name,arg", CASES, ids=[f"{n}:{a}" for n, a in CASES])
def test_config_builds(name, arg, monkeypatch):
    config = importlib.import_module(f"experiments.{name}").get_config(arg)
    assert importlib.import_module(f"experiments.{name}").__doc__.lstrip().startswith("python launch.py")
    class_names = data.class_names(config.data)
    exp = build_experiment(config, num_classes=len(class_names))
    evs = evaluators.build_evaluators(config, task=exp.task, class_names=class_names)
    assert config.train.best_metric in evaluators.scalar_names(evs)
    from seg_jax.data.derived.statistics import WEIGHT_METHODS
    assert config.get("class_weights") in (None, *WEIGHT_METHODS)
    h, w = config.data.crop_size
    padded_to = []  # the model declares the multiple it pads its input to (tiled prediction aligns tiles to it)
    real_pad = layers.pad_to_multiple
    monkeypatch.setattr(layers, "pad_to_multiple", lambda x, multiple: padded_to.append(multiple) or real_pad(x, multiple))
    for module in (unet, fcn, mask_rcnn):
        monkeypatch.setattr(module, "pad_to_multiple", layers.pad_to_multiple)
    variables = jax.eval_shape(lambda: exp.init_model.init(jax.random.PRNGKey(0), jnp.zeros((1, h, w, 3)),
                                                           train=False))
    assert padded_to and set(padded_to) == {exp.init_model.input_multiple}, (padded_to, exp.init_model.input_multiple)
    out = jax.eval_shape(lambda v: exp.task.predict(v, jnp.zeros((2, h, w, 3))), variables)
    if exp.task.name == "detection":
        k = config.model.get("max_detections", exp.init_model.max_detections)
        assert out["masks"].shape == (2, k, h, w) and out["boxes"].shape == (2, k, 4)
    else:
        assert out.shape == (2, h, w, len(class_names))
    assert float(exp.learning_rate_fn(config.train.steps // 2)) > 0


def test_building_configs_imports_neither_tfds_nor_grain():
    code = ("import sys, importlib, pathlib\n"
            f"sys.path.insert(0, {str(ROOT)!r})\n"
            f"for name in {CONFIG_FILES!r}:\n"
            "    module = importlib.import_module('experiments.' + name)\n"
            "    [module.get_config(arg) for arg in module.ARGS]\n"
            "heavy = [m for m in ('tensorflow_datasets', 'grain', 'jax', 'flax') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_bad_config_argument_names_valid_ones():
    with pytest.raises(ValueError, match="valid: fcn32s, fcn16s, fcn8s"):
        importlib.import_module("experiments.fcn").get_config("fcn4s")
    with pytest.raises(ValueError, match="unknown size 'huge'"):
        importlib.import_module("experiments.fcn").get_config("fcn8s,huge")
    nuclei = importlib.import_module("experiments.nuclei")
    with pytest.raises(ValueError, match="valid: ce_cc, unet_weights_cc"):
        nuclei.get_config("stardist,folder")
    with pytest.raises(ValueError, match=r"unknown or repeated option\(s\) huge .* valid: folder, tiny"):
        nuclei.get_config("ce_cc,huge")
    assert nuclei.get_config("ce_cc,tiny,folder").data.name == "folder"


def test_unknown_model_loss_and_evaluator_names_list_valid_ones():
    config = importlib.import_module("experiments.default").get_config("tiny")
    config.model.name = "unet3d"
    with pytest.raises(KeyError, match="unknown model 'unet3d'; valid names: .*unet"):
        build_experiment(config, num_classes=3)
    config = importlib.import_module("experiments.default").get_config("tiny")
    config.loss = {"focal": 1.0}
    with pytest.raises(KeyError, match="unknown loss 'focal'; valid names: cross_entropy, dice"):
        build_experiment(config, num_classes=3)
    config = importlib.import_module("experiments.default").get_config("tiny")
    config.loss.dice.epsilon = 1e-3
    with pytest.raises(ValueError, match="loss 'dice' has no option.* epsilon; its options: weight, eps"):
        build_experiment(config, num_classes=3)
    config = importlib.import_module("experiments.mask_rcnn").get_config("shapes,tiny")
    config.loss.dice = 1.0
    with pytest.raises(KeyError, match=r"unknown Mask R-CNN loss term\(s\) \['dice'\] in config.loss; valid names: rpn_objectness"):
        build_experiment(config, num_classes=6)
    config = importlib.import_module("experiments.default").get_config("tiny")
    exp = build_experiment(config, num_classes=6)
    config.evals.val.type = "semantics"
    with pytest.raises(KeyError, match="unknown evaluator type 'semantics'; valid names: crf, detection"):
        evaluators.build_evaluators(config, task=exp.task, class_names=("a",) * 6)
    config.evals.val.type = "semantic"
    config.evals.val.boundary = 3
    with pytest.raises(ValueError, match="config.evals.val: unknown option.* boundary .*boundary_width"):
        evaluators.build_evaluators(config, task=exp.task, class_names=("a",) * 6)
    with pytest.raises(KeyError, match="valid names: .*shapes"):
        data.base_config("voc")


def test_task_comes_from_the_model_or_the_config():
    from seg_jax import tasks
    default = importlib.import_module("experiments.default").get_config("tiny")
    assert tasks.task_name(default) == "semantic"
    assert tasks.task_name(importlib.import_module("experiments.mask_rcnn").get_config("shapes,tiny")) == "detection"
    default.task = "panoptic"
    with pytest.raises(KeyError, match="unknown task 'panoptic'; valid names: detection, semantic"):
        tasks.task_name(default)
