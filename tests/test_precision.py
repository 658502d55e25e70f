"""Mixed precision from `config.model.dtype`: every registered model computes its convolutions and matmuls in
bfloat16 while parameters, BatchNorm statistics, logits and losses stay float32; bfloat16 logits are close to
float32 ones; other dtypes are refused naming the valid ones. Tracing only (eval_shape / make_jaxpr) but for the
closeness test, so each case takes seconds."""
import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import step_timing
from seg_jax import data
from seg_jax.models import MODELS, create_model
from seg_jax.models.backbones import create_backbone
from seg_jax.train import validate
from seg_jax.train.experiment import build_experiment

KEY = jax.random.key(0, impl="rbg")
# every registered model → the test-sized config that runs it
CONFIGS = {"unet": ("default", "tiny"), "fcn32s": ("fcn", "fcn32s,tiny"), "fcn16s": ("fcn", "fcn16s,tiny"),
           "fcn8s": ("fcn", "fcn8s,tiny"), "mask_rcnn": ("mask_rcnn", "shapes,tiny")}
BF16_UNIT_ROUNDOFF = 2.0 ** -8  # bfloat16 keeps 8 significant bits


def _equations(jaxpr):
    """Every equation of `jaxpr` and of the jaxprs nested in it."""
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _equations(inner)


def _matmul_dtypes(jaxpr) -> set[tuple[str, ...]]:
    """The operand dtypes of every convolution and dot product in `jaxpr`."""
    return {tuple(str(v.aval.dtype) for v in eqn.invars) for eqn in _equations(jaxpr)
            if eqn.primitive.name in ("conv_general_dilated", "dot_general")}


def _bfloat16_sum_lengths(jaxpr) -> set[int]:
    """How many elements each bfloat16 `reduce_sum` of `jaxpr` adds up (bias gradients would be B·H·W)."""
    return {math.prod(eqn.invars[0].aval.shape[a] for a in eqn.params["axes"]) for eqn in _equations(jaxpr)
            if eqn.primitive.name == "reduce_sum" and eqn.invars[0].aval.dtype == jnp.bfloat16}


def _dtypes(tree) -> set[str]:
    return {str(leaf.dtype) for leaf in jax.tree.leaves(tree)}


def test_every_registered_model_has_a_case():
    assert set(CONFIGS) == set(MODELS.names())


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_bfloat16_computes_in_bfloat16_and_keeps_float32_state_outputs_and_loss(name):
    file, arg = CONFIGS[name]
    config = importlib.import_module(f"experiments.{file}").get_config(arg)
    config.model.dtype = "bfloat16"  # as --config.model.dtype=bfloat16 sets it
    num_classes = len(data.class_names(config.data))
    exp = build_experiment(config, num_classes=num_classes)
    h, w = config.data.crop_size
    variables = jax.eval_shape(lambda: exp.init_model.init({"params": KEY, "dropout": KEY}, jnp.zeros((1, h, w, 3)),
                                                           train=False))
    assert _dtypes(variables) == {"float32"}
    batch = step_timing.random_train_batch(config, num_devices=1, image_size=(h, w), num_classes=num_classes)
    batch = {k: v for k, v in batch.items() if k in exp.task.train_keys}  # [1, b, ...]: one device

    def loss_and_grads(v, b):  # the train step's, BatchNorm averaging over the device axis as under pmap
        def loss(params):
            total, terms, updates, _ = exp.task.loss({**v, "params": params}, b, jax.random.key(1), axis_name="batch")
            return total, (terms, updates)
        return jax.value_and_grad(loss, has_aux=True)(v["params"])
    step = jax.vmap(loss_and_grads, in_axes=(None, 0), axis_name="batch")
    jaxpr, ((total, (terms, updates)), grads) = jax.make_jaxpr(step, return_shape=True)(variables, batch)
    assert _matmul_dtypes(jaxpr.jaxpr) == {("bfloat16", "bfloat16")}  # forward and backward
    # no bias gradient summed in bfloat16: only 2×2 max-pool windows and FPN's ×2 repeats (<= 4 elements) are
    assert max(_bfloat16_sum_lengths(jaxpr.jaxpr), default=0) <= 4
    assert total.dtype == jnp.float32 and _dtypes(terms) == {"float32"} and _dtypes(grads) == {"float32"}
    assert _dtypes(updates.get("batch_stats", {})) <= {"float32"}
    if config.model.get("norm") == "batch":
        assert jax.tree.leaves(updates["batch_stats"])
    out = jax.eval_shape(lambda v: exp.task.predict(v, jnp.zeros((2, h, w, 3))), variables)
    if exp.task.name == "detection":
        assert {k: str(v.dtype) for k, v in out.items()} == {"boxes": "float32", "scores": "float32",
                                                             "classes": "int32", "valid": "bool", "masks": "float32"}
    else:
        assert out.dtype == jnp.float32


def test_bottleneck_resnet_backbone_computes_in_bfloat16_with_float32_statistics():
    """ResNet-50 (Mask R-CNN's torchvision backbone), narrowed: its features are bfloat16, its state float32."""
    backbone = create_backbone("resnet50", width_multiplier=1 / 16, dtype=jnp.bfloat16)
    x = jnp.zeros((2, 32, 32, 3))
    variables = jax.eval_shape(backbone.init, KEY, x)
    assert _dtypes(variables) == {"float32"} and "batch_stats" in variables
    apply = lambda v: backbone.apply(v, x, train=True, mutable=["batch_stats"])  # noqa: E731
    jaxpr, (features, updates) = jax.make_jaxpr(apply, return_shape=True)(variables)
    assert _matmul_dtypes(jaxpr.jaxpr) == {("bfloat16", "bfloat16")}
    assert _dtypes(features) == {"bfloat16"} and _dtypes(updates) == {"float32"}


@pytest.mark.parametrize("layer", ["conv", "dense", "upconv"])
def test_bias_gradients_are_summed_in_float32(layer):
    """A bias gradient is the sum of the output's cotangent over B·H·W = 32768 pixels here: equal to the float64 sum
    of the bfloat16 cotangent to float32 precision (summed in bfloat16 it was 7 % off)."""
    from seg_jax.models.layers import Conv, Dense
    from seg_jax.models.unet import UpConv2x2
    module = {"conv": Conv(3, (1, 1), dtype=jnp.bfloat16), "dense": Dense(3, dtype=jnp.bfloat16),
              "upconv": UpConv2x2(3, dtype=jnp.bfloat16)}[layer]
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(8, 64, 64, 2) if layer != "upconv" else (8, 32, 32, 2)), jnp.float32)
    variables = module.init(KEY, x)
    assert module.apply(variables, x).dtype == jnp.bfloat16 and _dtypes(variables) == {"float32"}
    cotangent = jnp.asarray(rng.normal(size=(8, 64, 64, 3)) + 0.01, jnp.bfloat16)
    _, vjp = jax.vjp(lambda v: module.apply(v, x), variables)
    (grads,) = vjp(cotangent)
    expected = np.asarray(cotangent, np.float64).sum(axis=(0, 1, 2))
    np.testing.assert_allclose(grads["params"]["bias"], expected, rtol=1e-5)


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_bfloat16_logits_are_close_to_float32(norm):
    """The same U-Net parameters in both dtypes. Each of its L = 13 conv layers rounds its input, kernel and output
    to bfloat16 (relative error <= u = 2^-8 each); ReLU and He-scaled kernels keep the gain near 1, so independent
    roundings add in quadrature to a relative error of about sqrt(3 L) u = 0.024 of the logits (measured: 0.005
    without normalisation, 0.014 with BatchNorm on batch statistics)."""
    options = dict(depth=2, base_width=8, norm=norm)  # 13 convs: 2 per level and bottleneck, 2 ups, 4 dec, head
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
    f32 = create_model("unet", num_classes=4, **options)
    bf16 = create_model("unet", num_classes=4, dtype="bfloat16", **options)
    rng = np.random.default_rng(1)
    fan_in = lambda shape: math.prod(shape[:-1]) if len(shape) > 1 else 1  # noqa: E731
    variables = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * np.sqrt(2 / fan_in(s.shape)),
                                                   jnp.float32), jax.eval_shape(f32.init, KEY, x))
    a, b = (np.asarray(jax.jit(lambda v, m=m: m.apply(v, x, train=True, mutable=["batch_stats"])[0])(variables),
                       np.float64) for m in (f32, bf16))
    relative = np.linalg.norm(a - b) / np.linalg.norm(a)
    assert 0 < relative <= math.sqrt(3 * 13) * BF16_UNIT_ROUNDOFF
    assert np.mean(a.argmax(-1) == b.argmax(-1)) > 0.95


def test_other_dtypes_are_refused_naming_the_valid_ones():
    config = importlib.import_module("experiments.default").get_config("tiny")
    config.model.dtype = "float16"
    with pytest.raises(validate.ConfigError, match=r"'float16' is not a compute dtype seg_jax supports; valid values: "
                                                   r"float32, bfloat16 \(float16 would need loss scaling\)") as caught:
        validate.validate_config(config, num_devices=1, process_count=1)
    assert caught.value.field == "model.dtype"
    for bad in ("bf16", "int8"):
        with pytest.raises(ValueError, match="valid values: float32, bfloat16"):
            create_model("unet", num_classes=2, dtype=bad)
    assert create_model("unet", num_classes=2, dtype=jnp.bfloat16).dtype == jnp.bfloat16
