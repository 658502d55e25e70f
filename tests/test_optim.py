"""seg_jax.train.optim: weight decay only on kernels, per-prefix learning rates and frozen parameters, checked
against NumPy on hand-built parameter trees and through the configs that build them."""
import importlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from seg_jax.train import optim, validate
from seg_jax.train.experiment import build_experiment

RNG = np.random.default_rng(0)


def _tree():
    """A conv with bias, a BatchNorm, a dense kernel, a scalar (as the CRF's compatibilities): float32 leaves."""
    def normal(*shape):
        return jnp.asarray(RNG.normal(size=shape), jnp.float32)
    return {"backbone": {"conv1": {"kernel": normal(3, 3, 2, 4), "bias": normal(4)},
                         "bn1": {"scale": normal(4), "bias": normal(4)}},
            "head": {"kernel": normal(4, 3), "bias": normal(3)},
            "crf": {"compat": normal()}}


def _cfg(**options):
    return ml_collections.ConfigDict({"name": "adamw", "learning_rate": 0.1, "weight_decay": 0.1, "momentum": 0.9,
                                      "grad_clip_norm": None, "decay_norm_and_bias": False, "lr_multipliers": {},
                                      "frozen": (), **options})


def _at(tree, path: str):
    for name in path.split("/"):
        tree = tree[name]
    return tree


def _step(tx, params, grads):
    """One update from a fresh state: (updates, new params)."""
    updates, _ = tx.update(grads, tx.init(params), params)
    return updates, optax.apply_updates(params, updates)


def test_decay_mask_marks_kernels_only():
    mask = optim.decay_mask(_tree())
    assert mask == {"backbone": {"conv1": {"kernel": True, "bias": False}, "bn1": {"scale": False, "bias": False}},
                    "head": {"kernel": True, "bias": False}, "crf": {"compat": False}}


def test_adamw_step_decays_kernels_not_biases_as_numpy():
    params, grads = _tree(), _tree()
    lr, wd, eps = 0.1, 0.1, 1e-8
    _, new = _step(optim.make_optimizer(_cfg(), optax.constant_schedule(lr)), params, grads)
    for path in ("backbone/conv1/kernel", "head/kernel", "backbone/conv1/bias", "backbone/bn1/scale", "crf/compat"):
        p, g = (np.asarray(_at(t, path), np.float64) for t in (params, grads))
        # step 1: bias-corrected m = g, v = g², so Adam's direction is g / (|g| + eps); decoupled decay: + wd·p
        decay = wd * p if path.endswith("kernel") else 0.0
        expected = p - lr * (g / (np.abs(g) + eps) + decay)
        # float32 rounding of Adam's ~10 operations on values of order 1: a few ulps (1e-6); the decay term is
        # lr · wd · p ≈ 1e-2, four orders above it
        np.testing.assert_allclose(_at(new, path), expected, rtol=0, atol=1e-6, err_msg=path)


def test_sgd_decay_is_masked_too_and_true_decays_everything():
    params, grads = _tree(), _tree()
    lr, wd = 0.1, 0.1
    for decay_all in (False, True):
        cfg = _cfg(name="sgd", momentum=0.0, decay_norm_and_bias=decay_all)
        _, new = _step(optim.make_optimizer(cfg, optax.constant_schedule(lr)), params, grads)
        for path in ("backbone/conv1/kernel", "backbone/conv1/bias", "backbone/bn1/scale"):
            p, g = (np.asarray(_at(t, path), np.float64) for t in (params, grads))
            decay = wd * p if (decay_all or path.endswith("kernel")) else 0.0
            np.testing.assert_allclose(_at(new, path), p - lr * (g + decay), rtol=0, atol=1e-6, err_msg=path)


def test_decay_norm_and_bias_true_is_the_previous_optimizer_bit_for_bit():
    params, grads = _tree(), _tree()
    schedule = optax.cosine_decay_schedule(0.1, 10)
    for name, before in (("adamw", optax.adamw(schedule, weight_decay=0.1)),
                         ("sgd", optax.chain(optax.add_decayed_weights(0.1), optax.sgd(schedule, momentum=0.9)))):
        tx = optim.make_optimizer(_cfg(name=name, grad_clip_norm=1.0, decay_norm_and_bias=True), schedule)
        before = optax.chain(optax.clip_by_global_norm(1.0), before)
        assert jax.tree.structure(tx.init(params)) == jax.tree.structure(before.init(params))  # checkpoints restore
        for a, b in zip(jax.tree.leaves(_step(tx, params, grads)), jax.tree.leaves(_step(before, params, grads))):
            np.testing.assert_array_equal(a, b)


def test_lr_multiplier_scales_the_matching_subtree_exactly():
    params, grads = _tree(), _tree()
    schedule = optax.constant_schedule(0.1)
    plain, _ = _step(optim.make_optimizer(_cfg(name="sgd"), schedule), params, grads)
    scaled, _ = _step(optim.make_optimizer(_cfg(name="sgd", lr_multipliers={"backbone": 0.1}), schedule),
                      params, grads)
    for a, b in zip(jax.tree.leaves(scaled["backbone"]), jax.tree.leaves(plain["backbone"])):
        np.testing.assert_array_equal(a, np.float32(0.1) * np.asarray(b))
    for part in ("head", "crf"):
        for a, b in zip(jax.tree.leaves(scaled[part]), jax.tree.leaves(plain[part])):
            np.testing.assert_array_equal(a, b)


def test_longest_prefix_wins_and_whole_names_only():
    params, grads = _tree(), _tree()
    multipliers = {"backbone": 0.5, "backbone/bn1": 0.0, "head/kernel": 2.0}
    tx = optim.scale_by_prefix(multipliers)
    out, _ = tx.update(grads, tx.init(params))
    np.testing.assert_array_equal(out["backbone"]["conv1"]["kernel"], np.float32(0.5) * grads["backbone"]["conv1"]["kernel"])
    assert not np.any(out["backbone"]["bn1"]["scale"])
    np.testing.assert_array_equal(out["head"]["kernel"], 2 * grads["head"]["kernel"])
    np.testing.assert_array_equal(out["head"]["bias"], grads["head"]["bias"])
    assert optim.matches("backbone/conv1/kernel", "backbone") and not optim.matches("backbone2/kernel", "backbone")
    with pytest.raises(ValueError, match=r"'back' in config.optimizer.lr_multipliers matches no parameter that trains "
                                         r".*backbone, crf, head"):
        optim.scale_by_prefix({"back": 0.1}).init(params)


def test_frozen_prefixes_keep_their_values_and_get_no_decay():
    params, grads = _tree(), _tree()
    tx = optim.with_frozen(optim.make_optimizer(_cfg(decay_norm_and_bias=True), optax.constant_schedule(0.1)),
                           lambda _: ["backbone/bn1", "crf"])
    _, new = _step(tx, params, grads)
    for frozen in (new["backbone"]["bn1"], new["crf"]):
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(frozen), jax.tree.leaves(
            params["backbone"]["bn1"] if "scale" in frozen else params["crf"])))
    assert not np.array_equal(new["backbone"]["conv1"]["bias"], params["backbone"]["conv1"]["bias"])
    with pytest.raises(ValueError, match=r"'backbone/bn' in config.optimizer.frozen matches no parameter"):
        optim.with_frozen(optax.sgd(0.1), lambda _: ["backbone/bn"]).init(params)


def _unet_config(**optimizer):
    config = importlib.import_module("experiments.default").get_config("tiny")
    config.optimizer = ml_collections.ConfigDict({**config.optimizer.to_dict(), **optimizer})  # any types
    config.schedule.warmup_steps = 0  # a first step that moves what trains
    return config


def test_config_groups_reach_the_optimizer_a_run_builds():
    config = _unet_config(frozen=("down0",), lr_multipliers={"head": 0.5})
    exp = build_experiment(config, num_classes=3)
    # the U-Net's names, few leaves: op-by-op updates of the whole tree compile for a minute on a loaded CPU
    shapes = {"down0": {"Conv_0": {"kernel": (3, 3, 3, 4)}}, "head": {"kernel": (1, 1, 4, 3), "bias": (3,)},
              "down1": {"Conv_0": {"kernel": (3, 3, 4, 8)}, "BatchNorm_0": {"scale": (8,), "bias": (8,)}}}
    is_shape = lambda x: isinstance(x, tuple)  # noqa: E731
    params, grads = (jax.tree.map(lambda s: jnp.asarray(RNG.normal(size=s), jnp.float32), shapes, is_leaf=is_shape)
                     for _ in range(2))
    _, new = _step(exp.tx, params, grads)
    np.testing.assert_array_equal(new["down0"]["Conv_0"]["kernel"], params["down0"]["Conv_0"]["kernel"])
    lr, eps = float(exp.learning_rate_fn(0)), 1e-8
    wd = config.optimizer.weight_decay
    trained = {k: v for k, v in grads.items() if k != "down0"}  # clipping sees only what trains
    clip = min(1.0, config.optimizer.grad_clip_norm / float(optax.tree_utils.tree_norm(trained)))
    for module, key, factor in (("down1/Conv_0", "kernel", 1.0), ("down1/BatchNorm_0", "bias", 1.0),
                                ("down1/BatchNorm_0", "scale", 1.0), ("head", "kernel", 0.5), ("head", "bias", 0.5)):
        p, g = (np.asarray(_at(t, f"{module}/{key}"), np.float64) for t in (params, grads))
        g = g * clip
        # adamw's first step, decay on kernels only (the default decay_norm_and_bias=False), times the multiplier
        decay = wd * p if key == "kernel" else 0.0
        expected = p - factor * lr * (g / (np.abs(g) + eps) + decay)
        got = _at(new, f"{module}/{key}")
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6, err_msg=f"{module}/{key}")


@pytest.mark.parametrize("changes,field,message", [
    (dict(lr_multipliers={"encoder": 0.1}), "optimizer.lr_multipliers", "'encoder' in config.optimizer.lr_multipliers "
                                                                       "matches no parameter that trains"),
    (dict(frozen=("down9",)), "optimizer.frozen", "'down9' in config.optimizer.frozen matches no parameter"),
    (dict(lr_multipliers={"head": -1.0}), "optimizer.lr_multipliers.head", "must be a number >= 0"),
    (dict(frozen="head"), "optimizer.frozen", "must be a tuple of parameter-path prefixes"),
    (dict(frozen=("",)), "optimizer.frozen", "must be a tuple of parameter-path prefixes"),
    (dict(decay_norm_and_bias="no"), "optimizer.decay_norm_and_bias", "must be True or False"),
])
def test_validate_names_the_bad_group_field(changes, field, message):
    config = _unet_config(**changes)
    with pytest.raises(validate.ConfigError, match=message) as caught:
        validate.validate_config(config, num_devices=1, process_count=1)
    assert caught.value.field == field
