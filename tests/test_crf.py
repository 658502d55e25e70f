"""Dense CRF: the exact pass against a NumPy mean-field written here, the "grid" approximation against the
exact pass, zero pairwise weights, edge refinement on a synthetic scene, batching, gradients, pydensecrf."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seg_jax.postprocess.crf import CRFLayer, dense_crf

# Kernels small enough for 12×12 test images to feel the truncation and the edges.
SMALL = dict(gaussian_sxy=1.5, gaussian_compat=3.0, bilateral_sxy=4.0, bilateral_srgb=30.0, bilateral_compat=10.0)


def numpy_dense_crf(logits, image, *, iterations, gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb,
                    bilateral_compat):
    """Reference mean field for one image [H, W, N] / [H, W, 3], in float64, following pydensecrf's equations."""
    height, width, classes = logits.shape
    yx = np.stack(np.meshgrid(np.arange(height), np.arange(width), indexing="ij"), -1).reshape(-1, 2)
    rgb = image.reshape(-1, 3).astype(np.float64)
    sq_pos = ((yx[:, None] - yx[None]) ** 2).sum(-1)
    sq_rgb = ((rgb[:, None] - rgb[None]) ** 2).sum(-1)
    kernels = [(gaussian_compat, np.exp(-sq_pos / (2 * gaussian_sxy ** 2))),
               (bilateral_compat, np.exp(-sq_pos / (2 * bilateral_sxy ** 2) - sq_rgb / (2 * bilateral_srgb ** 2)))]
    z = logits.reshape(-1, classes).astype(np.float64)
    neg_unary = z - z.max(1, keepdims=True)
    neg_unary -= np.log(np.exp(neg_unary).sum(1, keepdims=True))
    q = np.exp(neg_unary)
    for _ in range(iterations):
        a = neg_unary.copy()
        for compat, k in kernels:
            d = 1 / np.sqrt(k.sum(1))  # NORMALIZE_SYMMETRIC; the sum includes j = i, as pydensecrf's does
            a += compat * d[:, None] * (k @ (d[:, None] * q))
        q = np.exp(a - a.max(1, keepdims=True))
        q /= q.sum(1, keepdims=True)
    return q.reshape(height, width, classes)


def random_case(seed, *, batch=1, height=12, width=12, classes=3):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(batch, height, width, classes)).astype(np.float32)
    image = rng.integers(0, 256, size=(batch, height, width, 3)).astype(np.uint8)
    return logits, image


@functools.cache
def crf(**options):
    """One jitted dense_crf per option set, shared by the tests."""
    return jax.jit(functools.partial(dense_crf, **options))


def test_exact_matches_numpy_reference():
    logits, image = random_case(0)
    got = crf(method="exact", iterations=4, **SMALL)(logits, image)
    want = numpy_dense_crf(logits[0], image[0], iterations=4, **SMALL)
    np.testing.assert_allclose(np.asarray(got)[0], want, atol=2e-5)
    assert np.abs(want - jax.nn.softmax(logits[0])).max() > 0.1  # the pairwise terms did change Q


def test_grid_converges_to_exact_as_window_grows():
    logits, image = random_case(1)
    exact = np.asarray(crf(method="exact", **SMALL)(logits, image))
    errors = [np.abs(np.asarray(crf(method="grid", downsample=1, truncate=t, **SMALL)(logits, image)) - exact).max()
              for t in (1.0, 2.0, 4.0)]
    assert errors[0] > 0.1 and errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 1e-4, errors


def test_grid_with_one_pixel_per_cluster_is_exact():
    # 2×2 cells with 4 clusters: every pixel is its own cluster, so pooling, cluster kernel and unpooling must
    # reproduce the exact pairwise sums (the image's 12 px fit 3 cells of 4 along W, and 2×2 along H does too).
    logits, image = random_case(2)
    exact = np.asarray(crf(method="exact", **SMALL)(logits, image))
    grid = np.asarray(crf(method="grid", downsample=2, modes=4, truncate=8.0, **SMALL)(logits, image))
    np.testing.assert_allclose(grid, exact, atol=1e-4)


@pytest.mark.parametrize("method", ["exact", "grid"])
def test_zero_pairwise_weights_return_softmax(method):
    logits, image = random_case(3)
    options = {**SMALL, "gaussian_compat": 0.0, "bilateral_compat": 0.0}
    got = crf(method=method, downsample=2, **options)(logits, image)
    np.testing.assert_allclose(np.asarray(got), np.asarray(jax.nn.softmax(logits, axis=-1)), atol=1e-6)


def edge_scene(seed=0, size=32, classes=3):
    """A clean three-region image and logits that are blurred and noised across its edges."""
    y, x = np.mgrid[:size, :size]
    labels = np.where((y - 12) ** 2 + (x - 20) ** 2 < 64, 1, np.where(x < 9, 2, 0))
    palette = np.array([[40, 60, 200], [230, 180, 40], [30, 160, 60]])
    image = palette[labels].astype(np.uint8)
    one_hot = np.eye(classes)[labels]
    coarse = one_hot.reshape(size // 8, 8, size // 8, 8, classes).mean((1, 3))  # a stride-8 network's view
    rng = np.random.default_rng(seed)
    logits = 3 * np.asarray(jax.image.resize(coarse, (size, size, classes), "linear"))
    logits = logits + rng.normal(scale=0.3, size=logits.shape)
    near_edge = np.zeros_like(labels, bool)
    for axis in (0, 1):  # pixels within 3 px of a label change
        change = np.diff(labels, axis=axis) != 0
        for shift in range(-3, 4):
            near_edge |= np.roll(np.pad(change, [(0, 1) if a == axis else (0, 0) for a in (0, 1)]), shift, axis)
    return logits[None].astype(np.float32), image[None], labels, near_edge


@pytest.mark.parametrize("method", ["exact", "grid"])
def test_crf_raises_accuracy_near_edges(method):
    logits, image, labels, near_edge = edge_scene()
    params = dict(gaussian_sxy=1.0, gaussian_compat=3.0, bilateral_sxy=10.0, bilateral_srgb=13.0,
                  bilateral_compat=10.0)
    refined = np.asarray(crf(method=method, downsample=4, modes=4, **params)(logits, image))[0]
    before = np.mean(logits[0].argmax(-1)[near_edge] == labels[near_edge])
    after = np.mean(refined.argmax(-1)[near_edge] == labels[near_edge])
    assert before < 0.9 and after > 0.97, (before, after)


def test_batch_of_two_equals_two_single_calls():
    logits, image = random_case(4, batch=2, height=12, width=20)
    run = crf(method="grid", downsample=4, modes=3, **SMALL)
    batched = np.asarray(run(logits, image))
    singles = np.concatenate([np.asarray(run(logits[i:i + 1], image[i:i + 1])) for i in range(2)])
    np.testing.assert_allclose(batched, singles, atol=1e-6)
    assert np.abs(batched[0] - batched[1]).max() > 0.1  # the two images really differ


def test_crf_layer_gradients_are_finite_and_match_finite_differences():
    logits, image = random_case(5, height=12, width=16)
    layer = CRFLayer(iterations=3, downsample=4, modes=3, **{k: v for k, v in SMALL.items() if "compat" not in k})
    params = jax.jit(layer.init)(jax.random.key(0), logits, image)  # eager, its many small ops took 7 s to dispatch
    assert float(params["params"]["bilateral_compat"]) == 10.0
    target = jax.nn.one_hot(np.arange(12 * 16).reshape(1, 12, 16) % 3, 3)

    @jax.jit
    def loss(params, logits):
        return -jnp.mean(jnp.sum(target * layer.apply(params, logits, image), axis=-1))

    grad_params, grad_logits = jax.grad(loss, argnums=(0, 1))(params, logits)
    leaves = jax.tree.leaves(grad_params) + [grad_logits]
    assert all(np.isfinite(np.asarray(g)).all() for g in leaves)
    # The bilateral weight's gradient against a central finite difference (float32, so loose).
    eps = 1e-2
    shifted = [jax.tree.map(lambda p: p, params) for _ in range(2)]
    for sign, p in zip((1, -1), shifted):
        p["params"]["bilateral_compat"] = params["params"]["bilateral_compat"] + sign * eps
    numeric = (loss(shifted[0], logits) - loss(shifted[1], logits)) / (2 * eps)
    analytic = grad_params["params"]["bilateral_compat"]
    assert abs(float(analytic)) > 1e-4
    np.testing.assert_allclose(float(analytic), float(numeric), rtol=0.05)


def test_post_processing_blocks_gradients_and_differentiable_passes_them():
    logits, image = random_case(6)
    def first_class_mass(z, flag):
        return dense_crf(z, image, iterations=2, downsample=2, differentiable=flag, **SMALL)[..., 0].sum()

    grad = {flag: jax.jit(jax.grad(first_class_mass), static_argnums=1)(logits, flag) for flag in (False, True)}
    assert np.all(np.asarray(grad[False]) == 0)
    assert np.isfinite(np.asarray(grad[True])).all() and np.abs(np.asarray(grad[True])).max() > 1e-3


def test_exact_agrees_with_pydensecrf():
    dcrf = pytest.importorskip("pydensecrf.densecrf")
    logits, image, _, _ = edge_scene(seed=1, size=24)
    rng = np.random.default_rng(7)  # add texture so that the colour term matters beyond the region means
    image = np.clip(image.astype(int) + rng.integers(-20, 21, image.shape), 0, 255).astype(np.uint8)
    params = dict(gaussian_sxy=3.0, gaussian_compat=3.0, bilateral_sxy=8.0, bilateral_srgb=13.0,
                  bilateral_compat=10.0)
    ours = np.asarray(crf(method="exact", **params)(logits, image))[0]
    height, width, classes = logits.shape[1:]
    model = dcrf.DenseCRF2D(width, height, classes)
    unary = -np.asarray(jax.nn.log_softmax(logits[0], axis=-1)).reshape(-1, classes).T
    model.setUnaryEnergy(np.ascontiguousarray(unary, np.float32))
    model.addPairwiseGaussian(sxy=params["gaussian_sxy"], compat=params["gaussian_compat"])
    model.addPairwiseBilateral(sxy=params["bilateral_sxy"], srgb=params["bilateral_srgb"],
                               rgbim=np.ascontiguousarray(image[0]), compat=params["bilateral_compat"])
    theirs = np.asarray(model.inference(5)).T.reshape(height, width, classes)
    # pydensecrf filters on a permutohedral lattice, an approximation: compare labels, and Q with a tolerance.
    assert np.mean(ours.argmax(-1) == theirs.argmax(-1)) > 0.99
    assert np.abs(ours - theirs).mean() < 1e-3
    assert np.mean(logits[0].argmax(-1) == theirs.argmax(-1)) < 0.95  # the CRF did move labels


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="lattice"), "valid values: exact, grid"),
    (dict(downsample=0), "downsample"),
    (dict(modes=0), "modes"),
    (dict(iterations=-1), "iterations"),
])
def test_bad_options_name_the_option(kwargs, message):
    logits, image = random_case(8)
    with pytest.raises(ValueError, match=message):
        dense_crf(logits, image, **kwargs)


def test_mismatched_image_names_both_shapes():
    logits, image = random_case(9)
    with pytest.raises(ValueError, match=r"image must be \[B, H, W, 3\]"):
        dense_crf(logits, image[:, :6])


def test_at_its_init_weights_the_layer_makes_an_untrained_unets_output_one_hot():
    # Why the crf study's `crf_rnn` arm (trained through the layer from the first step) does not learn: on the
    # spatially smooth logits of the untrained default U-Net, pydensecrf's weights (3, 10) drive mean field to one
    # label per pixel, while the U-Net's own softmax is close to uniform.
    from seg_jax import models
    from seg_jax.models.crf_head import WithCRF
    rng = np.random.default_rng(0)
    image = np.full((1, 64, 64, 3), 120.0, np.float32)
    for _ in range(5):  # flat squares on a grey background, with noise
        y, x = rng.integers(0, 48, 2)
        image[0, y:y + 14, x:x + 14] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 10, image.shape).astype(np.float32)
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    x = (image - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    unet = models.create_model("unet", num_classes=6, base_width=16, depth=3, norm="batch")  # experiments/default.py
    model = WithCRF(backbone=unet, crf=CRFLayer(), mean=mean, std=std)

    def entropy(p):  # nats, mean over pixels
        return float(-(p * np.log(np.maximum(p, 1e-30))).sum(-1).mean())

    init = jax.jit(lambda k: model.init(k, x, train=False))
    # (the U-Net's logits alone, the layer's log Q) in one program
    outputs = jax.jit(lambda v: (unet.apply({"params": v["params"]["backbone"],
                                             "batch_stats": v["batch_stats"]["backbone"]}, x), model.apply(v, x)))
    for seed in (0, 1):
        logits, log_q = (np.asarray(a, np.float64) for a in outputs(init(jax.random.key(seed, impl="rbg"))))
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        q = np.exp(log_q)
        assert entropy(p) > 1.5  # log 6 = 1.79
        assert entropy(q) < 0.01 and np.mean(q.max(-1) > 0.99) > 0.99  # one label at 99 % of the pixels or more
