"""`type: instances`: instances from each image's class probabilities (host side), scored against the true ids.

With `data.eval_size` the probabilities are resized to each image's native size (`native`) and the instances are
found and scored there, against the untouched native ids, as prediction on the whole image would find them."""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import jax
import numpy as np

from seg_jax import data, metrics, postprocess, visualize
from seg_jax.evaluators import native
from seg_jax.evaluators.base import Evaluator, to_host

INSTANCE_SCALARS = ("dsb", "mask_AP", "mask_AP50", "mask_AP75", "PQ", "SQ", "RQ", "PQ_per_image", "AJI",
                    "AJI_per_image", "num_images")
_RENAMED = {"AP": "mask_AP", "AP50": "mask_AP50", "AP75": "mask_AP75"}  # the detection evaluator's names


def instance_picture(images: Sequence[np.ndarray], pairs: list[tuple[np.ndarray, np.ndarray]], *,
                     boxes: list[tuple[np.ndarray, np.ndarray]] | None = None, num_classes: int = 1,
                     class_names: tuple[str, ...] = ()) -> np.ndarray:
    """A titled grid with one row per example: image | true instances | predicted instances (one colour each);
    with detections' `(boxes, classes)`, their boxes drawn in class colours on the image and the prediction, and
    a legend of those colours by `class_names`."""
    rows = []
    for i, (image, (t, p)) in enumerate(zip(images, pairs)):
        row = [image, visualize.colorize_instances(t), visualize.colorize_instances(p)]
        if boxes is not None:
            row[0], row[2] = (visualize.draw_boxes(x, *boxes[i], num_classes=num_classes) for x in (row[0], row[2]))
        rows.append(row)
    legend = visualize.class_legend(class_names, ignore=False) if boxes is not None and class_names else ()
    titles = ("image" + (" + boxes" if boxes is not None else ""), "true instances", "predicted instances")
    return visualize.figure(rows, titles=titles, legend=legend)


def picture_image(flat: dict[str, np.ndarray], i: int, *, data_cfg) -> np.ndarray:
    """uint8 [h, w, 3] picture of image `i` of a flattened eval batch, at its native size when the batch scores
    there (`native.native_picture`), so that it sits beside the instance maps."""
    image = data.denormalize(flat["image"][i], data_cfg)
    if not native.is_native(flat):
        return image
    return native.native_picture(image, fitted_size=flat["fitted_size"][i], native_size=flat["native_size"][i])


class InstancesEvaluator(Evaluator):
    """Options: `per_class` (instances of every foreground class, for multi-class data such as `shapes`; else one
    foreground) and `options` for `seg_jax.postprocess.instances_from_semantic` (method, markers, thresholds,
    morphology). Pixels with the ignore label count as background for both prediction and truth.
    """

    OPTIONS: ClassVar[dict[str, Any]] = {"per_class": False, "options": {}}
    DEFINITIONS: ClassVar[dict[str, str]] = {_RENAMED.get(k, k): v for k, v in metrics.INSTANCE_DEFINITIONS.items()}
    needs_instances: ClassVar[bool] = True

    def scalar_names(self) -> list[str]:
        return list(INSTANCE_SCALARS)

    def validate(self, dataset: Any) -> None:
        super().validate(dataset)
        if jax.process_count() > 1:
            raise NotImplementedError(f"config.evals.{self.name}: instance metrics are computed on the host of a "
                                      "single process; evaluate multi-host runs with --mode=eval in one process")

    def device_fn(self, state, batch):
        probabilities = jax.nn.softmax(self.task.predict(state.variables, batch["image"]), -1)
        return {"probabilities": native.to_native(probabilities, batch) if native.is_native(batch) else probabilities}

    def reset(self) -> None:
        self._metrics = metrics.InstanceMetrics()
        self._pairs: list[tuple[np.ndarray, np.ndarray]] = []
        self._images: list[np.ndarray] = []

    def _instances(self, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pred, scores, _ = postprocess.instances_with_scores(probabilities, per_class=self.options["per_class"],
                                                            **self.options["options"])
        return pred, scores

    def process(self, outputs, batch) -> None:
        probabilities = to_host(outputs)["probabilities"]
        flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in batch.items()}
        ignore = int(self.data_cfg.ignore_index)
        real = np.flatnonzero(flat["mask"] > 0)
        for i in real:
            p, label, true = probabilities[i], flat["label"][i], flat["instances"][i]
            if native.is_native(flat):  # crop the padding: morphology and distances must not see it
                size = flat["native_size"][i]
                p, label, true = (native.crop(x, size) for x in (p, flat["native_label"][i],
                                                                 flat["native_instances"][i]))
            ignored = label == ignore
            p = np.where(ignored[..., None], np.eye(p.shape[-1], dtype=p.dtype)[0], p)
            true = np.where(ignored, 0, true)
            pred, scores = self._instances(p)
            self._metrics.add(pred, true, scores=scores)
            if len(self._pairs) < self.num_pictures:
                self._pairs.append((true, pred))
                self._images.append(picture_image(flat, i, data_cfg=self.data_cfg))

    def evaluate(self) -> dict[str, float]:
        result = {_RENAMED.get(k, k): v for k, v in self._metrics.result().items()}
        return {k: result.get(k, float("nan")) for k in INSTANCE_SCALARS}

    def pictures(self) -> dict[str, np.ndarray]:
        if not self._pairs:
            return {}
        return {"instances": instance_picture(self._images, self._pairs)}
