"""Task-level quality of the dense CRF: a trained run's evaluation with seg_jax's CRF and with pydensecrf's.

    python launch.py                                                   # train the default experiment first
    python -m benchmarks.crf_task --workdir=runs/default               # then compare the two CRFs on its predictions
    python -m benchmarks.crf_task --config=experiments/fcn.py:fcn8s --workdir=runs/fcn8s --config.eval.crf.modes=32

Runs `seg_jax.train.evaluate` twice on the same checkpoint, predictions and metric code, with `config.eval.crf`
enabled: once as configured, once with `seg_jax.postprocess.crf.dense_crf` swapped for pydensecrf (`pip install
pydensecrf2`, benchmark-only) called through `jax.pure_callback` with the same parameters. Prints mIoU, boundary and
pixel accuracy without a CRF and with each. Each evaluation is also written to <workdir>/eval (never overwriting).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from benchmarks.crf import pydensecrf_reference

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/default.py", "Experiment config file[:arg].")
_WORKDIR = flags.DEFINE_string("workdir", "runs/default", "Run directory holding the trained checkpoint.")

_PARAMETERS = ("iterations", "gaussian_sxy", "gaussian_compat", "bilateral_sxy", "bilateral_srgb", "bilateral_compat")


def _pydensecrf_host(logits: np.ndarray, image: np.ndarray, **params) -> np.ndarray:
    """pydensecrf on a batch: logits [B, H, W, N], image [B, H, W, 3] in 0..255 → probabilities [B, H, W, N]."""
    images = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return np.stack([pydensecrf_reference(rgb, x, **params)[0] for x, rgb in zip(logits, images)]).astype(np.float32)


def pydensecrf_dense_crf(logits: jax.Array, image: jax.Array, **options) -> jax.Array:
    """`dense_crf`'s signature, computed by pydensecrf on the host; grid-only options are ignored."""
    host = functools.partial(_pydensecrf_host, **{k: options[k] for k in _PARAMETERS})
    return jax.pure_callback(host, jax.ShapeDtypeStruct(logits.shape, jnp.float32), logits.astype(jnp.float32),
                             image.astype(jnp.float32))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from seg_jax import train
    from seg_jax.postprocess import crf

    config = _CONFIG.value
    config.eval.crf.enabled = True
    ours = train.evaluate(config, _WORKDIR.value)
    defaults = {k: v for k, v in config.eval.crf.to_dict().items() if k in _PARAMETERS}
    original = crf.dense_crf
    crf.dense_crf = lambda logits, image, **options: pydensecrf_dense_crf(logits, image, **{**defaults, **options})
    try:
        reference = train.evaluate(config, _WORKDIR.value)
    finally:
        crf.dense_crf = original
    print("predictions | mean_iou | boundary_accuracy | pixel_accuracy")
    for name, record in (("no CRF", ours), ("seg_jax dense_crf", ours["crf"]), ("pydensecrf", reference["crf"])):
        print(f"{name} | {record['mean_iou']:.4f} | {record['boundary_accuracy']:.4f} | {record['pixel_accuracy']:.4f}")


if __name__ == "__main__":
    app.run(main)
