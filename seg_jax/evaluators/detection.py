"""`type: detection`: COCO mask and box AP and the DSB score of a detection model's outputs over a split.

With `data.eval_size` the pasted mask probabilities are resized bilinearly to each image's native size and the boxes
scaled to it (`native`), and everything is scored against the untouched native instance and class maps."""
from __future__ import annotations

from typing import ClassVar

import jax.numpy as jnp
import numpy as np

from seg_jax import metrics
from seg_jax.evaluators import native
from seg_jax.evaluators.base import Evaluator, to_host
from seg_jax.evaluators.instances import instance_picture, picture_image

DETECTION_SCALARS = ("mask_AP", "mask_AP50", "mask_AP75", "box_AP", "box_AP50", "box_AP75", "dsb", "PQ", "SQ", "RQ",
                     "PQ_per_image", "AJI", "AJI_per_image", "num_images", "mean_iou", "pixel_accuracy", "mean_dice")


class DetectionEvaluator(Evaluator):
    """Detections of `task.predict` against every instance of the true maps (`metrics.DetectionMetrics`): COCO mask
    and box AP, DSB, PQ, AJI, and the semantic metrics of the class map the detections paint (so Mask R-CNN shares
    `mean_iou` with the semantic models and `dsb`, `mask_AP`, `PQ`, `AJI` with the `instances` evaluator).
    Options: `mask_threshold` (detection masks are binarised at it)."""

    OPTIONS: ClassVar[dict] = {"mask_threshold": 0.5}
    DEFINITIONS: ClassVar[dict[str, str]] = dict(metrics.DETECTION_DEFINITIONS)
    needs_instances: ClassVar[bool] = True

    def scalar_names(self) -> list[str]:
        return list(DETECTION_SCALARS) + [f"{kind}/{name}" for kind in ("iou", "dice") for name in self.class_names]

    def device_fn(self, state, batch):
        out = self.task.predict(state.variables, batch["image"])
        if not native.is_native(batch):
            return out
        masks = native.to_native(jnp.moveaxis(out["masks"], 1, -1), batch)  # [b, H, W, K]
        scale = (batch["native_size"] / batch["fitted_size"]).astype(jnp.float32)  # (y, x) per image
        return {**out, "masks": jnp.moveaxis(masks, -1, 1),
                "boxes": out["boxes"] * jnp.concatenate([scale[:, ::-1], scale[:, ::-1]], -1)[:, None]}

    def reset(self) -> None:
        self._metrics = metrics.DetectionMetrics(mask_threshold=float(self.options["mask_threshold"]),
                                                 ignore_index=int(self.data_cfg.ignore_index),
                                                 class_names=self.class_names)
        self._first: dict | None = None

    def process(self, outputs, batch) -> None:
        out = to_host(outputs)
        flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in batch.items()}
        if native.is_native(flat):
            out, flat = _cropped(out, flat)
        self._metrics.add(out, instances=flat["instances"], labels=flat["label"], example_mask=flat["mask"])
        if self._first is None and self.num_pictures:
            keep = np.flatnonzero(flat["mask"] > 0)[:self.num_pictures]
            threshold = float(self.options["mask_threshold"])
            self._first = {
                "image": [picture_image(flat, i, data_cfg=self.data_cfg) for i in keep],
                "pairs": [(flat["instances"][i], metrics.detections_to_instances(out["masks"][i], out["valid"][i],
                                                                                 threshold=threshold)) for i in keep],
                "boxes": [(out["boxes"][i][out["valid"][i]], out["classes"][i][out["valid"][i]]) for i in keep]}

    def evaluate(self) -> dict[str, float]:
        result = self._metrics.result()
        return {k: result[k] for k in self.scalar_names()}

    def pictures(self) -> dict[str, np.ndarray]:
        if not self._first or not len(self._first["image"]):
            return {}
        return {"instances": instance_picture(self._first["image"], self._first["pairs"], boxes=self._first["boxes"],
                                              num_classes=len(self.class_names), class_names=self.class_names)}



def _cropped(out: dict, flat: dict) -> tuple[dict, dict]:
    """Detections and truth of a native-resolution batch as per-image lists cropped to each image's native size
    (the resized masks repeat the edge over the padding and must not paint instances there)."""
    sizes = flat["native_size"]
    masks = [native.crop(m.transpose(1, 2, 0), size).transpose(2, 0, 1) for m, size in zip(out["masks"], sizes)]
    truth = {key: [native.crop(x, size) for x, size in zip(flat[f"native_{key}"], sizes)]
             for key in ("instances", "label")}
    return {**out, "masks": masks}, {**flat, **truth}
