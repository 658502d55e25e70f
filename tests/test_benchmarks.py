"""The PyTorch mirrors of benchmarks.torch_reference: same parameter count and output shape as seg_jax's models."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks import torch_reference  # noqa: E402
from benchmarks.torch_mirror import make_mirror, param_count  # noqa: E402
from seg_jax import models  # noqa: E402
from seg_jax.train.experiment import model_kwargs  # noqa: E402

NUM_CLASSES = 6


def _seg_jax_param_count(name: str, options: dict) -> int:
    model = models.create_model(name, num_classes=NUM_CLASSES, **options)
    # eval_shape: shapes only, nothing is compiled or initialised
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("network", sorted(torch_reference.NETWORKS))
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
def test_mirror_parameter_count_of_other_model_options(name, options):
    assert param_count(make_mirror(name, num_classes=NUM_CLASSES, **options)) == _seg_jax_param_count(name, options)


def test_parse_overrides_reads_literals_and_bare_words():
    assert torch_reference.parse_overrides("base") == {}
    assert torch_reference.parse_overrides("model.dtype=bfloat16+model.depth=4") == {
        "model.dtype": "bfloat16", "model.depth": 4}
