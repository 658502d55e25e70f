"""The detection task: Mask R-CNN-style models trained on boxes, classes and masks from instance ids."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Mapping

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from seg_jax import data, losses

TARGET_KEYS = ("boxes", "classes", "masks", "valid")


def loss_weights(loss_config: Mapping[str, Any], *, terms: tuple[str, ...]) -> dict[str, float]:
    """Weight per loss term from `config.loss` (a number, or `{"weight": w}`); terms not named weigh 1.

    Raises:
        KeyError: a name that is not one of `terms` (the message lists them).
        ValueError: an option other than `weight` (the model's terms take no other).
    """
    if hasattr(loss_config, "to_dict"):
        loss_config = loss_config.to_dict()
    unknown = sorted(set(loss_config) - set(terms))
    if unknown:
        raise KeyError(f"unknown Mask R-CNN loss term(s) {unknown} in config.loss; valid names: {', '.join(terms)}")
    weights = {name: 1.0 for name in terms}
    for name, value in loss_config.items():
        weights[name], _ = losses.parse_term(name, value, options={})
    return weights


@dataclasses.dataclass(frozen=True)
class DetectionTask:
    """Detections per image; loss the weighted sum of the model's five terms (`MaskRCNN.loss_terms`).

    Training batches carry, besides `image` float32 `[b, h, w, 3]`, the padded ground truth that the input
    pipeline's `data.DetectionTargets` step computes from each augmented example's instance ids: `boxes` float32
    `[b, G, 4]`, `classes` int32 `[b, G]`, `masks` uint8 `[b, G, h, w]`, `valid` bool `[b, G]`.
    """

    model: nn.Module
    weights: Mapping[str, float]
    max_instances: int
    ignore_index: int
    name: ClassVar[str] = "detection"
    train_keys: ClassVar[tuple[str, ...]] = ("image", *TARGET_KEYS)

    @staticmethod
    def output_channels(config: ml_collections.ConfigDict, *, num_classes: int) -> int:
        del config
        return num_classes

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, *, model: nn.Module, num_classes: int,
                    class_weights: np.ndarray | None = None) -> "DetectionTask":
        from seg_jax.models.mask_rcnn import LOSS_TERMS
        del num_classes
        if class_weights is not None:
            raise ValueError("config.class_weights weights pixel losses; the detection task has none")
        return cls(model=model, weights=loss_weights(config.loss, terms=LOSS_TERMS),
                   max_instances=int(config.data.max_instances), ignore_index=int(config.data.ignore_index))

    def loss(self, variables: dict, batch: dict[str, jax.Array], rng: jax.Array, *,
             axis_name: str | None) -> tuple[jax.Array, dict, dict, dict]:
        """Per-device loss; each term is normalised over the global batch (`axis_name`)."""
        missing = [key for key in self.train_keys if key not in batch]
        if missing:
            raise KeyError(f"the detection task's batch lacks {missing}; the input pipeline adds them with "
                           "seg_jax.data.DetectionTargets (train_batches(..., example_map=...))")
        targets = {key: batch[key] for key in TARGET_KEYS}
        terms, updates = self.model.apply(variables, batch["image"], targets, key=rng, train=True,
                                          axis_name=axis_name, method=self.model.loss_terms, mutable=["batch_stats"])
        total = sum(self.weights[name] * value for name, value in terms.items())
        return total, terms, updates, {}

    def predict(self, variables: dict, images: jax.Array) -> dict[str, jax.Array]:
        """Detections of `images` `[b, h, w, 3]` (`MaskRCNN.__call__`): boxes `[b, K, 4]`, scores, classes,
        valid `[b, K]`, pasted mask probabilities `[b, K, h, w]`."""
        return self.model.apply(variables, images, train=False)

    def train_example_map(self) -> Callable:
        return data.DetectionTargets(max_instances=self.max_instances, ignore_index=self.ignore_index)

    @staticmethod
    def default_evals() -> dict[str, Any]:
        return {"val": {"type": "detection"}}
