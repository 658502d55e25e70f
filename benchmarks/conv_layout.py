"""python -m benchmarks.conv_layout [--size=128 --batch=8 --rounds=4]

Issue 11's open lead: one convolution's forward + backward ran 20-40 % faster in NCHW than NHWC on XLA:CPU; does a
whole network? Times the train step (forward, backward, an SGD update) of the same U-Net (depth 3, width 16, the
default's layers: two 3x3 convolutions + normalisation + ReLU per level, 2x2 max-pool, 2x2 up-convolution,
concatenated skips, 1x1 head, cross-entropy) written with `lax` convolutions in each layout, interleaved in one
process, and prints one JSON line with the seconds per step of each and their ratio. flax's `nn.Conv` is NHWC only,
so this measures the lever before anything is rebuilt on it. `equal_gradients` (tested) checks that the two
layouts compute the same step.
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

LAYOUTS = {"NHWC": ("NHWC", "HWIO", "NHWC"), "NCHW": ("NCHW", "OIHW", "NCHW")}


def _channel_axis(layout: str) -> int:
    return -1 if layout == "NHWC" else 1


def init_params(*, layout: str, width: int = 16, depth: int = 3, num_classes: int = 6, seed: int = 0) -> list:
    """He-normal kernels of the U-Net, HWIO (NHWC) or OIHW (NCHW): the same numbers in both layouts."""
    rng = np.random.default_rng(seed)

    def kernel(k: int, cin: int, cout: int) -> jax.Array:
        w = rng.normal(0.0, (2.0 / (k * k * cin)) ** 0.5, (k, k, cin, cout)).astype(np.float32)
        return jnp.asarray(w if layout == "NHWC" else w.transpose(3, 2, 0, 1))

    params, cin = [], 3
    for d in range(depth + 1):
        cout = width * 2 ** d
        params.append((kernel(3, cin, cout), kernel(3, cout, cout)))
        cin = cout
    for d in reversed(range(depth)):
        cout = width * 2 ** d
        params.append((kernel(2, cin, cout), kernel(3, 2 * cout, cout), kernel(3, cout, cout)))
        cin = cout
    params.append(kernel(1, cin, num_classes))
    return params


def apply(params: list, x: jax.Array, *, layout: str, depth: int = 3) -> jax.Array:
    """Logits in the input's layout: `[N, H, W, K]` (NHWC) or `[N, K, H, W]` (NCHW)."""
    dn, axis = LAYOUTS[layout], _channel_axis(layout)
    spatial = (1, 2) if layout == "NHWC" else (2, 3)
    window = tuple(2 if i in spatial else 1 for i in range(4))

    def conv_norm_relu(x, w):
        y = lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn)
        stats_axes = tuple(i for i in range(4) if i != axis % 4)
        mean = y.mean(stats_axes, keepdims=True)
        var = jnp.square(y - mean).mean(stats_axes, keepdims=True)
        return jax.nn.relu((y - mean) * lax.rsqrt(var + 1e-5))

    skips = []
    for d in range(depth + 1):
        a, b = params[d]
        x = conv_norm_relu(conv_norm_relu(x, a), b)
        if d < depth:
            skips.append(x)
            x = lax.reduce_window(x, -jnp.inf, lax.max, window, window, "VALID")
    for i, d in enumerate(reversed(range(depth))):
        up, a, b = params[depth + 1 + i]
        x = lax.conv_transpose(x, up, (2, 2), "VALID", dimension_numbers=dn)
        x = conv_norm_relu(conv_norm_relu(jnp.concatenate([x, skips[d]], axis), a), b)
    return lax.conv_general_dilated(x, params[-1], (1, 1), "SAME", dimension_numbers=dn)


def loss_fn(params: list, images_nhwc: jax.Array, labels: jax.Array, *, layout: str, depth: int = 3) -> jax.Array:
    """Mean cross-entropy; images `[N, H, W, 3]` float32 and labels `[N, H, W]` int32 whatever the layout."""
    x = images_nhwc if layout == "NHWC" else images_nhwc.transpose(0, 3, 1, 2)
    logits = apply(params, x, layout=layout, depth=depth)
    logits = logits if layout == "NHWC" else logits.transpose(0, 2, 3, 1)
    log_p = jax.nn.log_softmax(logits)  # one-hot, not take_along_axis: its gradient's scatter folds slowly
    return -jnp.mean(jnp.sum(log_p * jax.nn.one_hot(labels, log_p.shape[-1]), -1))


def make_step(layout: str, *, depth: int = 3):
    """The jitted step `(params, images, labels) -> (loss, params)`: one SGD update (lr 1e-3)."""
    def step(params, images, labels):
        loss, grads = jax.value_and_grad(loss_fn)(params, images, labels, layout=layout, depth=depth)
        return loss, jax.tree_util.tree_map(lambda p, g: p - 1e-3 * g, params, grads)
    return jax.jit(step)


def equal_gradients(*, size: int = 32, batch: int = 2, depth: int = 3) -> tuple[float, float]:
    """(|loss NHWC - loss NCHW|, max |gradient difference|), the NCHW kernels' gradients put back into HWIO."""
    images, labels = _inputs(size=size, batch=batch)
    out = {}
    for layout in LAYOUTS:
        grad_fn = jax.jit(jax.value_and_grad(loss_fn), static_argnames=("layout", "depth"))  # not op by op
        out[layout] = grad_fn(init_params(layout=layout, depth=depth), images, labels, layout=layout, depth=depth)
    back = jax.tree_util.tree_map(lambda g: g.transpose(2, 3, 1, 0), out["NCHW"][1])
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree_util.tree_leaves(out["NHWC"][1]),
                                                               jax.tree_util.tree_leaves(back)))
    return abs(float(out["NHWC"][0] - out["NCHW"][0])), diff


def _inputs(*, size: int, batch: int) -> tuple[jax.Array, jax.Array]:
    rng = np.random.default_rng(1)
    images = jnp.asarray(rng.normal(size=(batch, size, size, 3)).astype(np.float32))
    labels = jnp.asarray(rng.integers(0, 6, (batch, size, size)).astype(np.int32))
    return images, labels


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2, help="steps per layout per round")
    parser.add_argument("--depth", type=int, default=3, help="U-Net levels (3: the default U-Net)")
    args = parser.parse_args(argv)
    images, labels = _inputs(size=args.size, batch=args.batch)
    runs = {}
    for layout in LAYOUTS:  # compile outside the timed rounds
        step, params = make_step(layout, depth=args.depth), init_params(layout=layout, depth=args.depth)
        jax.block_until_ready(step(params, images, labels))
        runs[layout] = (step, params)
    times: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
    for _ in range(args.rounds):
        for layout, (step, params) in runs.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                jax.block_until_ready(step(params, images, labels))
            times[layout].append((time.perf_counter() - start) / args.steps)
    record = {"size": args.size, "batch": args.batch, "depth": args.depth, "rounds": args.rounds,
              **{f"{layout}_s_per_step": round(float(np.median(t)), 4) for layout, t in times.items()},
              **{f"{layout}_rounds": [round(x, 4) for x in t] for layout, t in times.items()}}
    record["NCHW_over_NHWC"] = round(record["NCHW_s_per_step"] / record["NHWC_s_per_step"], 3)
    print(json.dumps(record))
    return record


if __name__ == "__main__":
    main()
