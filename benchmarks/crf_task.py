"""Task-level quality of the dense CRF: a trained run's evaluation with seg_jax's CRF and with pydensecrf's.

    python launch.py                                                   # train the default experiment first
    python -m benchmarks.crf_task --workdir=runs/default               # then compare the two CRFs on its predictions
    python -m benchmarks.crf_task --config=experiments/fcn.py:fcn8s --workdir=runs/fcn8s

Evaluates the workdir's checkpoint once with three evaluators over the same predictions and metric code: `val`
(no CRF), `val_crf` (`seg_jax.postprocess.dense_crf`, type `crf`) and `val_pydensecrf` (type `pydensecrf`,
registered here: the `crf` evaluator with pydensecrf, `pip install pydensecrf2`, benchmark-only, called through
`jax.pure_callback` with the same parameters). Prints mIoU, boundary and pixel accuracy of each; the evaluation is
also written to <workdir>/eval (never overwriting).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from benchmarks.crf import pydensecrf_reference
from experiments import common
from seg_jax import evaluators

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/default.py", "Experiment config file[:arg].")
_WORKDIR = flags.DEFINE_string("workdir", "runs/default", "Run directory holding the trained checkpoint.")

_PARAMETERS = ("iterations", "gaussian_sxy", "gaussian_compat", "bilateral_sxy", "bilateral_srgb", "bilateral_compat")


def _pydensecrf_host(logits: np.ndarray, image: np.ndarray, **params) -> np.ndarray:
    """pydensecrf on a batch: logits [B, H, W, N], image [B, H, W, 3] in 0..255 → probabilities [B, H, W, N]."""
    images = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return np.stack([pydensecrf_reference(rgb, x, **params)[0] for x, rgb in zip(logits, images)]).astype(np.float32)


@evaluators.EVALUATORS.register("pydensecrf")
class PydenseCRFEvaluator(evaluators.CRFEvaluator):
    """The `crf` evaluator with pydensecrf on the host in place of seg_jax's dense CRF; grid-only options unused."""

    TRACED = ()  # pydensecrf takes Python floats

    def crf(self, logits: jax.Array, image: jax.Array) -> jax.Array:
        host = functools.partial(_pydensecrf_host, **{k: self.options[k] for k in _PARAMETERS})
        return jax.pure_callback(host, jax.ShapeDtypeStruct(logits.shape, jnp.float32), logits.astype(jnp.float32),
                                 image.astype(jnp.float32))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from seg_jax import train

    config = _CONFIG.value
    val = dict(config.evals.val.to_dict(), every=0)
    config.evals = {"val": val, "val_crf": common.crf_eval(), "val_pydensecrf": dict(common.crf_eval(),
                                                                                    type="pydensecrf")}
    scalars = train.evaluate(config, _WORKDIR.value)
    print("predictions | mean_iou | boundary_accuracy | pixel_accuracy")
    for name, label in (("val", "no CRF"), ("val_crf", "seg_jax dense_crf"), ("val_pydensecrf", "pydensecrf")):
        print(f"{label} | {scalars[f'{name}/mean_iou']:.4f} | {scalars[f'{name}/boundary_accuracy']:.4f} | "
              f"{scalars[f'{name}/pixel_accuracy']:.4f}")


if __name__ == "__main__":
    app.run(main)
