"""The whole config checked before anything is written (issue 10 items 3 and 5): one `ConfigError(field, ...)`,
printed by launch.py as `error: <field>: <message>` with exit status 2."""
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from seg_jax import data, train
from seg_jax.train import validate

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _field(config, *, num_devices=1, process_count=1, training=True):
    with pytest.raises(train.ConfigError) as error:
        validate.validate_config(config, num_devices=num_devices, process_count=process_count, training=training)
    return error.value.field, str(error.value)


@pytest.mark.parametrize("field,value", [
    ("train.batch_size", -4), ("train.steps", 0), ("train.log_every", -1), ("train.keep_checkpoints", 0),
    ("train.best_mode", "maximum"), ("train.schedule_steps", 0), ("data.crop_size", (0, 32)),
    ("data.eval_size", (64,)), ("data.std", (1.0, 0.0, 1.0)), ("data.targets", "edges"), ("data.name", "voc"),
    ("model.name", "unet3d"), ("optimizer.name", "adamx"), ("schedule.name", "cos"), ("evals.val.batch_size", 0),
    ("evals.val.every", -2), ("evals.val.type", "semantics")])
def test_each_bad_field_is_named(make_config, field, value):
    config = make_config()
    section, key = field.rsplit(".", 1)
    parent = config
    for part in section.split("."):
        parent = parent[part]
    parent[key] = value
    assert _field(config)[0] == field


def test_names_and_options_of_tasks_losses_models_and_evaluators_are_checked(make_config):
    config = make_config()
    config.loss = {"focal": 1.0}
    assert _field(config) == ("loss", "loss: unknown loss 'focal'; valid names: cross_entropy, dice, distance")
    config = make_config()
    config.loss.dice.epsilon = 1e-3
    assert _field(config)[0] == "loss.dice"
    config = make_config()
    config.model.widthx = 3
    assert _field(config)[0] == "model"
    config = make_config()
    config.task = "panoptic"
    assert _field(config)[0] == "task"
    config = make_config()
    config.evals.val.boundary = 3
    field, text = _field(config)
    assert field == "evals.val" and "boundary_width" in text


def test_batch_sizes_must_divide_over_devices_and_processes(make_config):
    config = make_config()
    config.evals.val.batch_size = 3  # the case on 2 devices
    assert _field(config, num_devices=2) == (
        "evals.val.batch_size", "evals.val.batch_size: 3 is not a multiple of the 2 device(s) x 1 process(es) = 2 "
                                "that share each batch")
    config = make_config()
    config.train.batch_size = 6
    assert _field(config, num_devices=2, process_count=2)[0] == "train.batch_size"
    validate.validate_config(config, num_devices=2, process_count=2, training=False)  # eval mode: not trained


def _launch(*args, devices=1, **kwargs):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=ROOT, **kwargs)


def test_launch_prints_one_line_exits_2_and_writes_nothing(tmp_path, data_dir):
    workdir = tmp_path / "run"
    done = _launch("--config=experiments/default.py:tiny", f"--workdir={workdir}", "--config.train.batch_size=-4",
                   f"--config.data.data_dir={data_dir}")
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == "error: train.batch_size: must be an integer >= 1, got -4"
    assert "Traceback" not in done.stderr and not workdir.exists()
    done = _launch("--config=experiments/default.py:tiny", f"--workdir={workdir}", "--config.evals.val.batch_size=3",
                   f"--config.data.data_dir={data_dir}", devices=2)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].startswith("error: evals.val.batch_size: 3 is not a multiple of the 2")
    assert not workdir.exists()


def test_missing_splits_are_named_before_anything_is_written(make_config, tmp_path):
    config = make_config()
    config.data.train_split = "training"
    with pytest.raises(train.ConfigError, match="^data.train_split: split 'training' not in dataset"):
        train.train_and_evaluate(config, tmp_path / "run")
    config = make_config()
    config.data.eval_split = "val"
    with pytest.raises(train.ConfigError, match="^data.eval_split: split 'val'"):
        train.train_and_evaluate(config, tmp_path / "run")
    config = make_config()
    config.data.variant = "huge"
    with pytest.raises(train.ConfigError, match="^data.variant: unknown data.variant 'huge'"):
        train.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_mixed_image_sizes_in_an_eval_split_need_eval_size(tmp_path):
    rng = np.random.default_rng(0)
    for directory in ("images", "labels"):
        (tmp_path / directory).mkdir()
    for i in range(8):
        size = (24, 24) if i % 2 else (32, 40)
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(tmp_path / "images" / f"x{i}.png")
        Image.fromarray((rng.random(size) > 0.5).astype(np.uint8)).save(tmp_path / "labels" / f"x{i}.png")
    from experiments import default
    config = default.get_config("tiny")
    config.data = data.base_config("folder")
    config.data.update(data_dir=str(tmp_path / "tfds"), crop_size=(16, 16), eval_split="train")
    config.data.folder.update(images=str(tmp_path / "images"), labels=str(tmp_path / "labels"), num_classes=2)
    config.train.best_metric = "val/mean_iou"
    with pytest.raises(train.ConfigError, match=r"^data.eval_size: split 'train' \(data.eval_split\) has images of "
                                                r"different sizes \((32x40 and 24x24|24x24 and 32x40) px"):
        train.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    config.data.eval_size = (32, 40)
    train.build_run(config)  # accepted once the eval size is set


def test_init_seed_sets_the_initialisation_apart_from_the_data_seed(make_config):
    def params(seed, init_seed=None):
        config = make_config()
        config.seed, config.init_seed = seed, init_seed
        return train.build_run(config).state.params

    seed_0, seed_3, init_3 = params(0), params(3), params(0, init_seed=3)
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, init_3, seed_3)))
    assert not np.array_equal(init_3["down0"]["Conv_0"]["kernel"], seed_0["down0"]["Conv_0"]["kernel"])
    config = make_config()
    config.init_seed = -1
    assert _field(config) == ("init_seed", "init_seed: must be an integer >= 0, got -1")
