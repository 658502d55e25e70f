"""The semantic task: a pixel classifier (FCN, U-Net, ...) trained with a weighted sum of pixel losses, optionally
with one more output channel that regresses the per-instance distance map (`config.loss` term "distance")."""
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

    With a distance term in `config.loss` (`losses.needs_distance`) the model has N + 1 output channels: the N class
    logits, then a linear distance channel trained against the batch's `distance` (`data.distance_target`). `predict`
    returns the class logits alone, so every semantic evaluator, the CRF, TTA and export read what they always did;
    `predict_outputs` adds the distance map for instance post-processing.

    Attributes:
        model: the module applied in the train step (BatchNorm synchronised over the device axis).
        loss_fn: `losses.make_loss_fn(config.loss)`.
        class_weights: optional float32 `[N]` (from the training split's label counts).
        ignore_index: the label value no loss or metric counts.
        distance: whether the model's last output channel is the distance map.
    """

    model: nn.Module
    loss_fn: Callable
    class_weights: np.ndarray | None
    ignore_index: int
    distance: bool = False
    name: ClassVar[str] = "semantic"

    @property
    def train_keys(self) -> tuple[str, ...]:
        return ("image", "label", "weights") + (("distance",) if self.distance else ())

    @staticmethod
    def output_channels(config: ml_collections.ConfigDict, *, num_classes: int) -> int:
        """The model's output channels: `num_classes`, plus the distance channel when `config.loss` regresses it."""
        return num_classes + int(losses.needs_distance(config.loss))

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, *, model: nn.Module, num_classes: int,
                    class_weights: np.ndarray | None = None) -> "SemanticTask":
        """Raises ValueError: a distance term without `data.distance_target`, or with the CRF-as-RNN layer."""
        del num_classes  # the model's output channels fix it
        distance = losses.needs_distance(config.loss)
        if distance and config.data.get("distance_target", None) is None:
            raise ValueError("config.loss has the term 'distance', which regresses the stored distance map: set "
                             "data.distance_target='normalized' (a dataset with instance ids)")
        crf = config.get("crf_layer", None)
        if distance and crf is not None and crf.enabled:
            raise ValueError("the CRF-as-RNN layer (crf_layer.enabled) refines class logits only and cannot take "
                             "the distance channel of the loss term 'distance'")
        return cls(model=model, loss_fn=losses.make_loss_fn(config.loss), class_weights=class_weights,
                   ignore_index=int(config.data.ignore_index), distance=distance)

    def _split(self, outputs: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """(class logits `[b, h, w, N]`, distance `[b, h, w]` or None) of the model's outputs."""
        if not self.distance:
            return outputs, None
        return outputs[..., :-1], outputs[..., -1]

    def loss(self, variables: dict, batch: dict[str, jax.Array], rng: jax.Array, *,
             axis_name: str | None) -> tuple[jax.Array, dict, dict, dict]:
        """Per-device loss of `batch` (`image` `[b, h, w, 3]`, `label` int32 `[b, h, w]`, `weights` `[b, h, w]`,
        and `distance` float32 `[b, h, w]` for a distance task).

        Returns `(total, {term: value}, mutable updates, {"pixel_accuracy": (correct, counted)})`.
        """
        outputs, updates = self.model.apply(variables, batch["image"], train=True, rngs={"dropout": rng},
                                            mutable=["batch_stats"])
        logits, distance = self._split(outputs)
        class_weights = None if self.class_weights is None else jnp.asarray(self.class_weights)
        extra = {"distance": distance, "distance_target": batch["distance"]} if self.distance else {}
        total, terms = self.loss_fn(logits, batch["label"], weights=batch["weights"], class_weights=class_weights,
                                    ignore_index=self.ignore_index, axis_name=axis_name, **extra)
        valid = (batch["label"] != self.ignore_index) & (batch["weights"] > 0)
        correct = jnp.sum((jnp.argmax(logits, -1) == batch["label"]) & valid)
        return total, terms, updates, {"pixel_accuracy": (correct, jnp.sum(valid))}

    def predict(self, variables: dict, images: jax.Array) -> jax.Array:
        """Logits float32 `[b, h, w, N]` of normalised images `[b, h, w, 3]` (the class channels only)."""
        return self._split(self.model.apply(variables, images, train=False))[0]

    def predict_outputs(self, variables: dict, images: jax.Array) -> dict[str, jax.Array]:
        """`{"logits": [b, h, w, N]}` and, for a distance task, `"distance": [b, h, w]` (the predicted
        `data.distance_target` map, unclipped), from one application of the model."""
        logits, distance = self._split(self.model.apply(variables, images, train=False))
        return {"logits": logits} if distance is None else {"logits": logits, "distance": distance}

    def train_example_map(self) -> Callable | None:
        return None

    @staticmethod
    def default_evals() -> dict[str, Any]:
        return {"val": {"type": "semantic"}}
