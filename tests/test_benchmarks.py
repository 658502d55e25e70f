"""The benchmarks' own pieces: XLA's FLOP count as the benchmarks read it (checked on hand-counted programs), and
the PyTorch mirrors of benchmarks.torch_reference (same parameter count and output shape as seg_jax's models; torch
is benchmark-only, so those tests need it installed)."""
from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.step_timing import flops_of, speed
from seg_jax import models
from seg_jax.train.experiment import model_kwargs

try:
    import torch
except ImportError:
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is benchmark-only (pip install torch)")
if torch is not None:
    from benchmarks import torch_reference
    from benchmarks.torch_mirror import make_mirror, param_count

NUM_CLASSES = 6


def _seg_jax_param_count(name: str, options: dict) -> int:
    model = models.create_model(name, num_classes=NUM_CLASSES, **options)
    # eval_shape: shapes only, nothing is compiled or initialised
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables["params"]))


def _conv(padding: str):
    return lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_flops_of_a_convolution_and_a_matmul_count_two_per_multiply_add():
    x, k = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))  # 2 images of 8x8x3, a 3x3 kernel to 4 channels
    # VALID: 6x6 outputs per image and channel, each 3*3*3 multiply-adds
    assert flops_of(jax.jit(_conv("VALID")).lower(x, k).compile()) == 2 * (2 * 6 * 6 * 4) * (3 * 3 * 3)
    # SAME: the taps on the zero padding are not counted; along one axis the 8 outputs use 2+3*6+2 = 22 taps
    assert flops_of(jax.jit(_conv("SAME")).lower(x, k).compile()) == 2 * 2 * (22 * 22) * 3 * 4
    a, b = jnp.ones((16, 32)), jnp.ones((32, 8))
    assert flops_of(jax.jit(jnp.dot).lower(a, b).compile()) == 2 * 16 * 32 * 8
    # pmapped (as the train step): per device
    assert flops_of(jax.pmap(jnp.dot).lower(a[None], b[None]).compile()) == 2 * 16 * 32 * 8


def test_benchmark_line_divides_the_flop_count_by_the_step_time():
    line = speed(seconds=0.5, flops=3e9, devices=2, batch=8)  # what benchmarks.train_step prints per step kind
    assert line == {"step_s": 0.5, "images_per_s": 16.0, "gflop_per_step": 6.0, "gflop_per_s": 12.0}
    assert speed(seconds=0.5, flops=None, devices=1, batch=8)["gflop_per_s"] is None


@needs_torch
@pytest.mark.parametrize("network", sorted(torch_reference.NETWORKS) if torch is not None else ["none"])
def test_mirror_of_each_benchmarked_network_has_seg_jax_parameter_count_and_output_shape(network):
    config = torch_reference.network_config(network, {}, batch_size=2)
    name, options = config.model.name, model_kwargs(config)
    mirror = make_mirror(name, num_classes=NUM_CLASSES, **options)
    assert param_count(mirror) == _seg_jax_param_count(name, options)
    # H, W not multiples of 32: the mirror pads and crops back as seg_jax does.
    image = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, 40, 56)).astype(np.float32))
    with torch.no_grad():
        logits = mirror.eval()(image.contiguous(memory_format=torch.channels_last))
    assert tuple(logits.shape) == (2, NUM_CLASSES, 40, 56)


@pytest.mark.parametrize("name,options", [
    ("unet", dict(depth=2, base_width=4, upsample="bilinear", norm="group")),
    ("fcn16s", dict(width_multiplier=1 / 16, norm="batch")),
    ("fcn32s", dict(width_multiplier=1 / 16, fc6_kernel=7)),
])
@needs_torch
def test_mirror_parameter_count_of_other_model_options(name, options):
    assert param_count(make_mirror(name, num_classes=NUM_CLASSES, **options)) == _seg_jax_param_count(name, options)


@needs_torch
def test_parse_overrides_reads_literals_and_bare_words():
    assert torch_reference.parse_overrides("base") == {}
    assert torch_reference.parse_overrides("model.dtype=bfloat16+model.depth=4") == {
        "model.dtype": "bfloat16", "model.depth": 4}


def test_conv_layout_benchmark_times_the_same_step_in_both_layouts(capsys):
    from benchmarks import conv_layout
    loss_gap, grad_gap = conv_layout.equal_gradients(size=16, depth=1)  # every kind of layer, compiled quickly
    assert loss_gap < 1e-5 and grad_gap < 1e-4
    record = conv_layout.main(["--size=16", "--batch=1", "--rounds=1", "--steps=1", "--depth=1"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == record
    assert record["NCHW_over_NHWC"] > 0 and len(record["NHWC_rounds"]) == 1


def test_restore_benchmark_times_both_states_of_one_structure():
    from benchmarks import restore
    line = restore.bench("experiments/default.py:tiny")
    assert line["model"] == "unet" and line["crop_size"] == [32, 32]
    assert line["leaves"] == line["initialised_leaves"] > 0
    assert line["restore_target_s"] > 0 and line["create_train_state_s"] > 0
