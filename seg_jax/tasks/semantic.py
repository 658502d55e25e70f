"""The semantic task: a pixel classifier (FCN, U-Net, ...) trained with a weighted sum of pixel losses."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from seg_jax import losses


@dataclasses.dataclass(frozen=True)
class SemanticTask:
    """Logits `[B, H, W, N]` per pixel; loss `config.loss` over `label` with `weights` and class weights.

    Attributes:
        model: the module applied in the train step (BatchNorm synchronised over the device axis).
        loss_fn: `losses.make_loss_fn(config.loss)`.
        class_weights: optional float32 `[N]` (from the training split's label counts).
        ignore_index: the label value no loss or metric counts.
    """

    model: nn.Module
    loss_fn: Callable
    class_weights: np.ndarray | None
    ignore_index: int
    name: ClassVar[str] = "semantic"
    train_keys: ClassVar[tuple[str, ...]] = ("image", "label", "weights")

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, *, model: nn.Module, num_classes: int,
                    class_weights: np.ndarray | None = None) -> "SemanticTask":
        del num_classes  # the model's output channels fix it
        return cls(model=model, loss_fn=losses.make_loss_fn(config.loss), class_weights=class_weights,
                   ignore_index=int(config.data.ignore_index))

    def loss(self, variables: dict, batch: dict[str, jax.Array], rng: jax.Array, *,
             axis_name: str | None) -> tuple[jax.Array, dict, dict, dict]:
        """Per-device loss of `batch` (`image` `[b, h, w, 3]`, `label` int32 `[b, h, w]`, `weights` `[b, h, w]`).

        Returns `(total, {term: value}, mutable updates, {"pixel_accuracy": (correct, counted)})`.
        """
        logits, updates = self.model.apply(variables, batch["image"], train=True, rngs={"dropout": rng},
                                           mutable=["batch_stats"])
        class_weights = None if self.class_weights is None else jnp.asarray(self.class_weights)
        total, terms = self.loss_fn(logits, batch["label"], weights=batch["weights"], class_weights=class_weights,
                                    ignore_index=self.ignore_index, axis_name=axis_name)
        valid = (batch["label"] != self.ignore_index) & (batch["weights"] > 0)
        correct = jnp.sum((jnp.argmax(logits, -1) == batch["label"]) & valid)
        return total, terms, updates, {"pixel_accuracy": (correct, jnp.sum(valid))}

    def predict(self, variables: dict, images: jax.Array) -> jax.Array:
        """Logits float32 `[b, h, w, N]` of normalised images `[b, h, w, 3]`."""
        return self.model.apply(variables, images, train=False)

    def train_example_map(self) -> Callable | None:
        return None

    @staticmethod
    def default_evals() -> dict[str, Any]:
        return {"val": {"type": "semantic"}}
