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


def _matmul_dtypes(jaxpr) -> set[tuple[str, ...]]:
    """The operand dtypes of every convolution and dot product in `jaxpr` and the jaxprs nested in it."""
    found = set()
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("conv_general_dilated", "dot_general"):
            found.add(tuple(str(v.aval.dtype) for v in eqn.invars))
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found |= _matmul_dtypes(inner)
    return found


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
    # the train step's loss, BatchNorm averaging over the device axis as under pmap
    loss = jax.vmap(lambda v, b: exp.task.loss(v, b, jax.random.key(1), axis_name="batch"), in_axes=(None, 0),
                    axis_name="batch")
    jaxpr, (total, terms, updates, _) = jax.make_jaxpr(loss, return_shape=True)(variables, batch)
    assert _matmul_dtypes(jaxpr.jaxpr) == {("bfloat16", "bfloat16")}
    assert total.dtype == jnp.float32 and _dtypes(terms) == {"float32"}
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
