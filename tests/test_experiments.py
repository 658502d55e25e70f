"""Every config under experiments/ builds: its model, loss, optimiser and data names all exist."""
import importlib
import pathlib

import jax
import jax.numpy as jnp
import pytest

from seg_jax import data
from seg_jax.losses import LOSSES
from seg_jax.train.experiment import build_experiment

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted(p.stem for p in (ROOT / "experiments").glob("*.py") if p.stem != "__init__")
CASES = [(name, arg) for name in CONFIG_FILES
         for arg in importlib.import_module(f"experiments.{name}").ARGS]


@pytest.mark.parametrize("name,arg", CASES, ids=[f"{n}:{a}" for n, a in CASES])
def test_config_builds(name, arg):
    config = importlib.import_module(f"experiments.{name}").get_config(arg)
    assert importlib.import_module(f"experiments.{name}").__doc__.lstrip().startswith("python launch.py")
    num_classes = len(data.class_names(config.data))
    exp = build_experiment(config, num_classes=num_classes)
    if exp.task == "semantic":
        assert set(config.loss) <= set(LOSSES.names())
    assert config.get("class_weights") in (None, "inverse_frequency", "median_frequency")
    assert config.train.batch_size % config.eval.batch_size == 0 or config.eval.batch_size > 0
    h, w = config.data.crop_size
    variables = jax.eval_shape(lambda: exp.init_model.init(jax.random.PRNGKey(0), jnp.zeros((1, h, w, 3)),
                                                           train=False))
    out = jax.eval_shape(lambda v: exp.init_model.apply(v, jnp.zeros((2, h, w, 3)), train=False), variables)
    if exp.task == "detection":
        k = config.model.get("max_detections", exp.init_model.max_detections)
        assert out["masks"].shape == (2, k, h, w) and out["boxes"].shape == (2, k, 4)
    else:
        assert out.shape == (2, h, w, num_classes)
    assert float(exp.learning_rate_fn(config.train.steps // 2)) > 0


def test_bad_config_argument_names_valid_ones():
    with pytest.raises(ValueError, match="valid: fcn32s, fcn16s, fcn8s"):
        importlib.import_module("experiments.fcn").get_config("fcn4s")


def test_unknown_model_and_loss_names_list_valid_ones():
    config = importlib.import_module("experiments.default").get_config("tiny")
    config.model.name = "unet3d"
    with pytest.raises(KeyError, match="unknown model 'unet3d'; valid names: .*unet"):
        build_experiment(config, num_classes=3)
    config = importlib.import_module("experiments.default").get_config("tiny")
    config.loss = {"focal": 1.0}
    with pytest.raises(KeyError, match="unknown loss 'focal'; valid names: cross_entropy, dice"):
        build_experiment(config, num_classes=3)
    with pytest.raises(KeyError, match="valid names: .*shapes"):
        data.base_config("voc")
