"""Tests for seg_jax.models: shapes, the bilinear transposed conv, FCN/U-Net definitions, BatchNorm, grads."""
from __future__ import annotations

import functools
import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seg_jax.models import MODELS, BilinearUpsample, bilinear_kernel, create_model
from seg_jax.models.unet import UpConv2x2

NUM_CLASSES = 3
# XLA:CPU compiles threefry random ops very slowly (seconds per parameter shape); the "rbg" generator
# compiles in a fraction of that and initialisation values are irrelevant to these tests.
KEY = jax.random.key(0, impl="rbg")
TINY = {  # tiny widths so every compilation is fast
    "fcn32s": dict(width_multiplier=1 / 32),
    "fcn16s": dict(width_multiplier=1 / 32),
    "fcn8s": dict(width_multiplier=1 / 32),
    "unet": dict(depth=2, base_width=4),
}


def _images(shape: tuple[int, ...], seed: int = 0) -> jnp.ndarray:
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _param_count(tree) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


# ---------------------------------------------------------------------------------------------- registry
def test_registry_holds_the_semantic_models():
    # Other stages may register more names (instance models are tested with their stage).
    assert {"fcn32s", "fcn16s", "fcn8s", "unet"} <= set(MODELS.names())


def test_create_model_errors_name_the_culprit():
    with pytest.raises(KeyError, match="unet"):
        create_model("unte", num_classes=2)
    with pytest.raises(TypeError, match="widht"):
        create_model("unet", num_classes=2, widht=4)
    with pytest.raises(TypeError, match="output_stride"):  # fixed by the name "fcn8s"
        create_model("fcn8s", num_classes=2, output_stride=16)
    model = create_model("unet", num_classes=2, depth=1, base_width=2, norm="batchnorm")
    with pytest.raises(ValueError, match="norm='batchnorm'.*batch, group, layer"):
        jax.eval_shape(model.init, KEY, jnp.zeros((1, 8, 8, 3)))


# ---------------------------------------------------------------------------------------------- shapes
def _numpy_variables(model, x: jnp.ndarray, seed: int = 0):
    """He-scaled random variables built in NumPy: skips compiling random initialisers (slow on CPU)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, KEY, x)
    fan_in = lambda shape: math.prod(shape[:-1]) if len(shape) > 1 else 1  # noqa: E731
    return jax.tree.map(lambda s: jnp.asarray(
        rng.normal(size=s.shape) * np.sqrt(2 / fan_in(s.shape)), jnp.float32), shapes)


@pytest.mark.parametrize("name", sorted(TINY))
def test_logits_keep_any_input_resolution(name):
    x = _images((2, 37, 45, 3))  # neither 37 nor 45 is a multiple of 32 (or of 4)
    model = create_model(name, num_classes=NUM_CLASSES, **TINY[name])
    variables = _numpy_variables(model, x)
    apply = jax.jit(model.apply)
    logits = apply(variables, x)
    assert logits.shape == (2, 37, 45, NUM_CLASSES) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits)) and np.std(logits) > 0
    if name == "unet":
        # Documented padding: zeros at the bottom/right, logits cropped; top-left pixels unchanged.
        padded = jnp.pad(x, ((0, 0), (0, 3), (0, 3), (0, 0)))  # 40×48, multiples of 2**depth
        np.testing.assert_allclose(logits, apply(variables, padded)[:, :37, :45], atol=1e-5)


def test_fcn_variants_have_their_skips_and_upsampling():
    x = jnp.zeros((1, 64, 64, 3))
    expected = {"fcn32s": {"upscore32": 64}, "fcn16s": {"upscore2": 4, "upscore16": 32},
                "fcn8s": {"upscore2": 4, "upscore_pool4": 4, "upscore8": 16}}  # name → kernel size
    for name, upsamplers in expected.items():
        params = jax.eval_shape(create_model(name, num_classes=NUM_CLASSES, **TINY[name]).init, KEY,
                                x)["params"]
        found = {key: value["ConvTranspose_0"]["kernel"].shape for key, value in params.items()
                 if key.startswith("upscore")}
        assert found == {key: (k, k, NUM_CLASSES, NUM_CLASSES) for key, k in upsamplers.items()}
        assert {key for key in params if key.startswith("score_pool")} == {
            "fcn32s": set(), "fcn16s": {"score_pool4"}, "fcn8s": {"score_pool4", "score_pool3"}}[name]


def test_bfloat16_compute_keeps_float32_params_and_logits():
    model = create_model("unet", num_classes=NUM_CLASSES, depth=1, base_width=4, norm="batch",
                         dtype=jnp.bfloat16)
    x = jnp.zeros((1, 10, 10, 3))
    variables = jax.eval_shape(model.init, KEY, x)
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    logits, state = jax.eval_shape(
        lambda v: model.apply(v, x, capture_intermediates=True, mutable=["intermediates"]), variables)
    assert logits.dtype == jnp.float32
    assert state["intermediates"]["down0"]["Conv_0"]["__call__"][0].dtype == jnp.bfloat16


# ---------------------------------------------------------------------------------------------- bilinear
def test_bilinear_kernel_matches_closed_form():
    taps = {  # 1 - |k - (K - 1) / 2| / f, worked by hand
        2: [0.25, 0.75, 0.75, 0.25],
        3: [1 / 3, 2 / 3, 1.0, 2 / 3, 1 / 3],
        4: [0.125, 0.375, 0.625, 0.875, 0.875, 0.625, 0.375, 0.125],
    }
    for factor, t in taps.items():
        kernel = bilinear_kernel(factor, 2)
        expected = np.zeros((len(t), len(t), 2, 2))
        for c in range(2):
            expected[:, :, c, c] = np.outer(t, t)
        np.testing.assert_allclose(kernel, expected, atol=1e-7)
        params = BilinearUpsample(factor).init(KEY, jnp.zeros((1, 3, 3, 2)))["params"]
        np.testing.assert_allclose(params["ConvTranspose_0"]["kernel"], expected, atol=1e-7)


def _numpy_bilinear(x: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Half-pixel-centre bilinear upsampling [H, W, C] → values and interior mask [fH, fW]."""
    height, width, channels = x.shape
    out = np.zeros((height * factor, width * factor, channels))
    inside = np.zeros((height * factor, width * factor), bool)
    for oy in range(height * factor):
        for ox in range(width * factor):
            uy, ux = (oy + 0.5) / factor - 0.5, (ox + 0.5) / factor - 0.5
            if not (0 <= uy <= height - 1 and 0 <= ux <= width - 1):
                continue
            y0, x0 = min(int(uy), height - 2), min(int(ux), width - 2)
            dy, dx = uy - y0, ux - x0
            out[oy, ox] = ((1 - dy) * (1 - dx) * x[y0, x0] + (1 - dy) * dx * x[y0, x0 + 1]
                           + dy * (1 - dx) * x[y0 + 1, x0] + dy * dx * x[y0 + 1, x0 + 1])
            inside[oy, ox] = True
    return out, inside


@pytest.mark.parametrize("factor", [2, 3, 8])
def test_bilinear_upsample_interpolates_interior(factor):
    x = np.random.default_rng(factor).normal(size=(5, 6, 2))
    layer = BilinearUpsample(factor)
    variables = layer.init(KEY, x[None])
    out = np.asarray(layer.apply(variables, jnp.asarray(x[None], jnp.float32))[0])
    expected, inside = _numpy_bilinear(x, factor)
    assert out.shape == expected.shape and inside.sum() > out.shape[0] * out.shape[1] // 3
    np.testing.assert_allclose(out[inside], expected[inside], atol=1e-5)


# ---------------------------------------------------------------------------------------------- FCN
def _numpy_deconv(x: np.ndarray, kernel: np.ndarray, factor: int) -> np.ndarray:
    """Caffe deconvolution (stride f, padding f // 2) of [H, W, C] with the flipped [K, K, C, D] kernel."""
    height, width, _ = x.shape
    size = kernel.shape[0]
    flipped = kernel[::-1, ::-1]
    full = np.zeros(((height - 1) * factor + size, (width - 1) * factor + size, kernel.shape[3]))
    for i in range(height):
        for j in range(width):
            full[i * factor:i * factor + size, j * factor:j * factor + size] += np.einsum(
                "c,abcd->abd", x[i, j], flipped)
    pad = factor // 2
    return full[pad:pad + height * factor, pad:pad + width * factor]


@pytest.fixture(scope="module")
def fcn8s():
    """A tiny FCN-8s (group norm) and its initial variables, shared by the FCN tests."""
    model = create_model("fcn8s", num_classes=NUM_CLASSES, norm="group", **TINY["fcn8s"])
    return model, jax.jit(model.init)(KEY, jnp.zeros((1, 32, 32, 3)))


def test_fcn8s_fuses_skip_scores_as_defined(fcn8s):
    model, variables = fcn8s
    params = dict(variables["params"])
    for key in ("score_pool4", "score_pool3"):  # zero-initialised, as in the paper's staged training
        assert not np.any(params[key]["kernel"]) and not np.any(params[key]["bias"])

    # Random skip layers and upsampling kernels, so every term of the definition matters.
    rng = np.random.default_rng(2)
    for key in params:
        if key.startswith(("score_pool", "upscore")):
            params[key] = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32),
                                       params[key])
    x = _images((1, 64, 64, 3), seed=1)
    logits, state = jax.jit(functools.partial(model.apply, capture_intermediates=True,
                                              mutable=["intermediates"]))({"params": params}, x)
    scores = {key: np.asarray(value["__call__"][0][0]) for key, value in state["intermediates"].items()
              if key.startswith("score_")}
    kernel = {key: np.asarray(params[key]["ConvTranspose_0"]["kernel"]) for key in params
              if key.startswith("upscore")}

    fused = _numpy_deconv(scores["score_fr"], kernel["upscore2"], 2) + scores["score_pool4"]
    fused = _numpy_deconv(fused, kernel["upscore_pool4"], 2) + scores["score_pool3"]
    expected = _numpy_deconv(fused, kernel["upscore8"], 8)
    assert expected.shape == (64, 64, NUM_CLASSES)
    np.testing.assert_allclose(logits[0], expected, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------- U-Net
def _unet_param_count(depth: int, width: int, classes: int, *, upsample_taps: int) -> int:
    """Hand count: 3×3 convs with bias, 2×2 (taps=4) or 1×1 (taps=1) up-convs, a 1×1 head."""
    channels = [width * 2 ** level for level in range(depth + 1)]
    conv = lambda c_in, c_out, taps=9: taps * c_in * c_out + c_out  # noqa: E731
    total = conv(3, channels[0]) + conv(channels[0], channels[0])
    for level in range(1, depth + 1):
        total += conv(channels[level - 1], channels[level]) + conv(channels[level], channels[level])
    for level in range(depth):
        total += conv(channels[level + 1], channels[level], upsample_taps)
        total += conv(2 * channels[level], channels[level]) + conv(channels[level], channels[level])
    return total + conv(channels[0], classes, 1)


def test_unet_up_convolution_is_a_2x2_stride_2_transposed_conv():
    x = _images((2, 3, 4, 5), seed=6)
    variables = _numpy_variables(UpConv2x2(6), x)
    kernel, bias = (np.asarray(variables["params"][key]) for key in ("kernel", "bias"))
    out = np.asarray(UpConv2x2(6).apply(variables, x))
    expected = np.zeros((2, 6, 8, 6))
    for i in range(3):  # each input pixel paints its own 2×2 output block
        for j in range(4):
            for a in range(2):
                for b in range(2):
                    expected[:, 2 * i + a, 2 * j + b] = np.asarray(x)[:, i, j] @ kernel[a, b] + bias
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    # The same layer as the library's transposed convolution, whose kernel is stored flipped.
    library = jax.lax.conv_transpose(x, jnp.asarray(kernel[::-1, ::-1]), (2, 2), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(out, np.asarray(library) + bias, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("depth, width, upsample", [(1, 2, "transpose"), (0, 4, "transpose"),
                                                    (3, 8, "bilinear"), (4, 64, "transpose")])
def test_unet_parameter_count(depth, width, upsample):
    model = create_model("unet", num_classes=3, depth=depth, base_width=width, upsample=upsample)
    variables = jax.eval_shape(model.init, KEY, jnp.zeros((1, 16, 16, 3)))
    taps = 4 if upsample == "transpose" else 1
    expected = _unet_param_count(depth, width, 3, upsample_taps=taps)
    if (depth, width) == (1, 2):
        assert expected == 56 + 38 + 76 + 148 + 34 + 74 + 38 + 9  # worked layer by layer
    assert _param_count(variables["params"]) == expected

    # BatchNorm: 3×3 convs lose their bias (4·depth + 2 convs, C each), each BN adds scale and shift.
    normed = create_model("unet", num_classes=3, depth=depth, base_width=width, upsample=upsample,
                          norm="batch")
    variables = jax.eval_shape(normed.init, KEY, jnp.zeros((1, 16, 16, 3)))
    conv_channels = 2 * sum(width * 2 ** level for level in range(depth + 1)) + 2 * sum(
        width * 2 ** level for level in range(depth))
    assert _param_count(variables["params"]) == expected + conv_channels
    assert _param_count(variables["batch_stats"]) == 2 * conv_channels


# ---------------------------------------------------------------------------------------------- BatchNorm
def test_batch_norm_train_eval_and_pmap():
    model = create_model("unet", num_classes=NUM_CLASSES, depth=1, base_width=4, norm="batch")
    x = _images((4, 12, 12, 3), seed=3) * 2.0 + 1.0
    variables = jax.jit(model.init)(KEY, x)

    logits, state = jax.jit(functools.partial(
        model.apply, train=True, mutable=["batch_stats", "intermediates"], capture_intermediates=True))(
        variables, x)
    conv = np.asarray(state["intermediates"]["down0"]["Conv_0"]["__call__"][0], np.float64)
    stats = state["batch_stats"]["down0"]["BatchNorm_0"]
    np.testing.assert_allclose(stats["mean"], 0.1 * conv.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * conv.var(axis=(0, 1, 2)), rtol=1e-4)

    # Eval: running averages, so each image's logits are deterministic and independent of the batch.
    trained = {"params": variables["params"], "batch_stats": state["batch_stats"]}
    evaluate = jax.jit(model.apply)
    evaluated = evaluate(trained, x)
    np.testing.assert_array_equal(evaluated, evaluate(trained, x))
    np.testing.assert_allclose(evaluated[:1], evaluate(trained, x[:1]), atol=1e-5)
    assert not np.allclose(evaluated, logits, atol=1e-3)  # train mode used batch statistics

    # norm_axis_name="batch" has the same variables and, on one device, the same train-mode result.
    synced = create_model("unet", num_classes=NUM_CLASSES, depth=1, base_width=4, norm="batch",
                          norm_axis_name="batch")
    assert (jax.tree.structure(jax.eval_shape(synced.init, KEY, x))
            == jax.tree.structure(variables))
    step = jax.pmap(lambda v, images: synced.apply(v, images, train=True, mutable=["batch_stats"]),
                    axis_name="batch")
    replicated = jax.tree.map(lambda a: a[None], variables)
    pmapped_logits, pmapped_state = step(replicated, x[None])
    np.testing.assert_allclose(pmapped_logits[0], logits, atol=1e-5)
    np.testing.assert_allclose(pmapped_state["batch_stats"]["down0"]["BatchNorm_0"]["mean"][0],
                               stats["mean"], atol=1e-6)


# ---------------------------------------------------------------------------------------------- grads
def _assert_gradients_finite_and_nonzero(model, params, x):
    target = _images(x.shape[:3] + (NUM_CLASSES,), seed=5)
    grads = jax.jit(jax.grad(lambda p: jnp.mean(model.apply({"params": p}, x) * target)))(params)
    for path, grad in flax.traverse_util.flatten_dict(grads, sep="/").items():
        assert np.all(np.isfinite(grad)), path
        assert np.any(grad != 0), path


def test_fcn8s_gradients_are_finite_and_nonzero(fcn8s):
    model, variables = fcn8s
    _assert_gradients_finite_and_nonzero(model, variables["params"], _images((2, 32, 32, 3), seed=4))


def test_unet_gradients_are_finite_and_nonzero():
    model = create_model("unet", num_classes=NUM_CLASSES, norm="layer", upsample="bilinear",
                         **TINY["unet"])
    x = _images((2, 16, 16, 3), seed=4)
    _assert_gradients_finite_and_nonzero(model, _numpy_variables(model, x)["params"], x)


def test_input_multiples_are_one_per_pooling_step():
    from seg_jax.models import FCN, MaskRCNN, UNet
    assert UNet(num_classes=2, depth=3).input_multiple == 8 and UNet(num_classes=2, depth=0).input_multiple == 1
    assert FCN(num_classes=2, output_stride=8).input_multiple == 32  # pool5, whatever the finest fused stride
    # a stem of stride 4 (conv + max pool) and one stride-2 stage after the first of (8, 16): stride 8
    assert MaskRCNN(num_classes=2, backbone_widths=(8, 16)).input_multiple == 8
