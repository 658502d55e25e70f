"""`--mode=eval` (issue 10 item 4): the run's own config by default, refusing configs that change what the model
computes, and creating nothing in a workdir it cannot evaluate."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from seg_jax import train
from seg_jax.train import workdir as wd

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir):
    from experiments import default
    config = default.get_config("tiny")
    config.data.data_dir = data_dir
    config.model.base_width = 6  # not the file's value: evaluating needs the run's own config
    workdir = tmp_path_factory.mktemp("eval") / "run"
    return config, workdir, train.train_and_evaluate(config, workdir)


def test_eval_reads_the_runs_config_by_default(finished):
    _, workdir, scalars = finished
    again = train.evaluate(None, workdir)
    assert again == scalars
    saved = wd.read_config(workdir)
    assert saved.model.base_width == 6 and tuple(saved.data.crop_size) == (32, 32)


def test_eval_restores_into_zeros_without_compiling_the_initialisation(finished):
    import jax
    import numpy as np
    from seg_jax.train import loop
    from seg_jax.train.state import create_train_state, restore_target
    config, workdir, scalars = finished
    lowered = []

    def listen(event, _secs, fun_name=None, **_):
        if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            lowered.append(fun_name)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        assert train.evaluate(config, workdir) == scalars
        in_eval = list(lowered)
        fresh = train.build_run(config).state  # a training run's initial state does lower the initialisation
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert "jit(_create)" not in in_eval and in_eval, in_eval  # the eval step is lowered (cached or not)
    assert lowered[len(in_eval):] == ["jit(_create)"]
    exp = loop.build_experiment(config, num_classes=6)
    options = dict(init_model=exp.init_model, apply_model=exp.task.model, tx=exp.tx, image_shape=(32, 32))
    target, real = restore_target(**options), create_train_state(seed=0, **options)
    paths = lambda tree: [path for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    assert jax.tree_util.tree_structure(target) == jax.tree_util.tree_structure(real)
    assert paths(target) == paths(fresh)
    for zeros, value in zip(jax.tree.leaves(target), jax.tree.leaves(real)):
        assert isinstance(zeros, np.ndarray) and not zeros.any()
        assert zeros.shape == value.shape and zeros.dtype == value.dtype


def test_eval_refuses_a_config_that_changes_the_model_or_its_inputs(finished, make_config):
    config, workdir, _ = finished
    other = make_config()
    with pytest.raises(train.ConfigMismatchError, match=r"model.base_width: 6 → 4"):
        train.evaluate(other, workdir)
    other = config.copy_and_resolve_references()
    other.data.mean = (120.0, 120.0, 120.0)
    with pytest.raises(train.ConfigMismatchError, match=r"data.mean: \[123.675, 116.28, 103.53\] → \[120.0"):
        train.evaluate(other, workdir)
    # evaluation-only differences are fine
    other = config.copy_and_resolve_references()
    other.evals.val.update(batch_size=4, num_pictures=1)
    other.train.steps = 1000
    assert train.evaluate(other, workdir, split="train[:4]")["val/num_images"] == 4


def test_eval_restores_the_runs_optimiser_state_whatever_the_given_optimizer(finished):
    """Parameter groups change the optax state's structure (a decay mask adds a MaskedState); optimiser settings
    are training settings, so evaluation restores the checkpoint with the run's own."""
    config, workdir, scalars = finished
    other = config.copy_and_resolve_references()
    other.optimizer.update(decay_norm_and_bias=True, lr_multipliers={"head": 0.1}, name="sgd")
    assert wd.check_eval_config(other, workdir).optimizer.to_dict() == wd.read_config(workdir).optimizer.to_dict()
    assert train.evaluate(other, workdir) == scalars


def test_eval_creates_nothing_where_there_is_no_checkpoint(finished, tmp_path):
    config, _, _ = finished
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(train.NoCheckpointError, match="has no latest checkpoint to evaluate"):
        train.evaluate(config, empty)
    with pytest.raises(train.NotARunError, match="has no config.json"):
        train.evaluate(None, empty)
    assert list(empty.iterdir()) == []
    with pytest.raises(train.NoCheckpointError):
        train.evaluate(config, tmp_path / "missing", which="best")
    assert not (tmp_path / "missing").exists()


def test_launch_eval_without_config_uses_the_workdirs(finished):
    _, workdir, scalars = finished
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, str(ROOT / "launch.py"), "--mode=eval", f"--workdir={workdir}",
                           "--checkpoint=best", "--config.evals.val.num_pictures=1"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    written = sorted(workdir.glob("eval/best_step*.json"))
    assert written and json.loads(written[-1].read_text())["scalars"]["val/num_images"] == scalars["val/num_images"]
    empty = workdir.parent / "nothing"
    done = subprocess.run([sys.executable, str(ROOT / "launch.py"), "--mode=eval", f"--workdir={empty}"], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "has no config.json" in done.stderr and not empty.exists()


def _saved_state(config, workdir):
    """The run's newest checkpoint restored into its own model's state (the reading `--mode=eval` does)."""
    from seg_jax.train.checkpoints import open_for_reading
    ckpts = open_for_reading(workdir, config, which="latest", purpose="read")
    try:
        state, _ = ckpts.restore(train.build_run(config, training=False).state)
    finally:
        ckpts.close()
    return state


def _assert_trees_equal(got, want):
    import jax
    import numpy as np
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_init_from_starts_from_the_runs_weights_with_a_fresh_optimiser(finished):
    config, workdir, _ = finished
    saved = _saved_state(config, workdir)
    tuned = config.copy_and_resolve_references()
    tuned.train.init_from = str(workdir)
    state = train.build_run(tuned).state
    _assert_trees_equal(state.params, saved.params)
    _assert_trees_equal(state.batch_stats, saved.batch_stats)
    assert int(state.step) == 0 and int(saved.step) == config.train.steps
    # through a CRF-as-RNN layer: the run's network under the wrapper's `backbone`, Potts weights at their init
    tuned.crf_layer.update(enabled=True, iterations=1, downsample=4, modes=2)
    state = train.build_run(tuned).state
    _assert_trees_equal(state.params["backbone"], saved.params)
    _assert_trees_equal(state.batch_stats["backbone"], saved.batch_stats)
    assert {k: float(v) for k, v in state.params["crf"].items()} == {"gaussian_compat": 3.0, "bilateral_compat": 10.0}


def test_init_from_errors_name_the_field(finished, tmp_path):
    config, workdir, _ = finished
    tuned = config.copy_and_resolve_references()
    tuned.train.init_from = str(tmp_path / "nothing")
    with pytest.raises(train.ConfigError, match=r"^train.init_from: .*nothing/checkpoints does not exist"):
        train.build_run(tuned)
    tuned.train.init_from = str(workdir)
    tuned.model.base_width = 8  # the run has 6
    with pytest.raises(train.ConfigError, match=r"^train.init_from: the run .*run does not fit this model: .*shape"):
        train.build_run(tuned)
    tuned.model.base_width = 6
    tuned.model.pretrained = str(tmp_path / "weights.npz")
    with pytest.raises(train.ConfigError, match="set train.init_from or model.pretrained, not both"):
        train.build_run(tuned)
