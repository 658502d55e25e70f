"""A segmentation model followed by a trainable dense CRF (CRF-as-RNN, Zheng et al. 2015)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from seg_jax.postprocess.crf import CRFLayer


class WithCRF(nn.Module):
    """`backbone` logits refined by `crf`; trained end to end (mean field is unrolled and differentiable).

    The CRF's appearance kernel needs colours in 0..255, so the normalised input is mapped back with
    `mean` and `std` (the data config's). Output: log-probabilities `[B, H, W, N]`, used as logits.
    """

    backbone: nn.Module
    crf: CRFLayer
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def input_multiple(self) -> int:
        return self.backbone.input_multiple

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        logits = self.backbone(x, train=train)
        image = jax.lax.stop_gradient(x * jnp.asarray(self.std) + jnp.asarray(self.mean))
        return self.crf(logits, image)
