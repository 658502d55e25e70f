"""Seeds trained together (vmap over stacked states) reach the parameters and results of separate runs."""
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from seg_jax import train
from seg_jax.train import seeds


def _params(workdir):
    mngr = ocp.CheckpointManager(workdir / "checkpoints")
    restored = mngr.restore(mngr.latest_step(), args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    mngr.close()
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(restored["state"]["params"])]


def test_vmapped_seeds_equal_separate_runs(make_config, tmp_path):
    configs = []
    for seed in (0, 1):
        config = make_config()
        config.seed, config.name = seed, f"s{seed}"
        configs.append(config)
    together = seeds.train_seeds(configs, [tmp_path / "v0", tmp_path / "v1"])
    for seed, config, result in zip((0, 1), configs, together):
        alone = train.train_and_evaluate(config, tmp_path / f"a{seed}")
        for a, b in zip(_params(tmp_path / f"a{seed}"), _params(tmp_path / f"v{seed}")):
            np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-6)  # grouped vs plain convolutions: rounding only
        assert result.keys() == alone.keys()
        assert result["val/mean_iou"] == pytest.approx(alone["val/mean_iou"], abs=1e-3)
        assert (tmp_path / f"v{seed}" / "results.json").is_file()
    assert _params(tmp_path / "v0")[0].tolist() != _params(tmp_path / "v1")[0].tolist()  # each its own init


def test_only_configs_that_differ_in_seed_are_trained_together(make_config):
    a, b = make_config(), make_config()
    b.seed = 1
    seeds.check_same_but_seed([a, b])
    b.model.base_width = 8
    with pytest.raises(seeds.SeedsApart, match="differ in seed alone"):
        seeds.check_same_but_seed([a, b])
