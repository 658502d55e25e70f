"""`type: instances`: instances from each image's class probabilities (host side), scored against the true ids."""
from __future__ import annotations

from typing import Any, ClassVar

import jax
import numpy as np

from seg_jax import data, metrics, postprocess, visualize
from seg_jax.evaluators.base import Evaluator, to_host

INSTANCE_SCALARS = ("dsb", "mask_AP", "mask_AP50", "mask_AP75", "PQ", "SQ", "RQ", "PQ_per_image", "AJI",
                    "AJI_per_image", "num_images")
_RENAMED = {"AP": "mask_AP", "AP50": "mask_AP50", "AP75": "mask_AP75"}  # the detection evaluator's names


def instance_picture(images: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray]], *,
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
        return {"probabilities": jax.nn.softmax(self.task.predict(state.variables, batch["image"]), -1)}

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
        flat = {k: batch[k].reshape(-1, *batch[k].shape[2:]) for k in ("image", "label", "instances", "mask")}
        ignore = int(self.data_cfg.ignore_index)
        real = flat["mask"] > 0
        for p, label, true, image in zip(probabilities[real], flat["label"][real], flat["instances"][real],
                                         flat["image"][real]):
            ignored = label == ignore
            p = np.where(ignored[..., None], np.eye(p.shape[-1], dtype=p.dtype)[0], p)
            true = np.where(ignored, 0, true)
            pred, scores = self._instances(p)
            self._metrics.add(pred, true, scores=scores)
            if len(self._pairs) < self.num_pictures:
                self._pairs.append((true, pred))
                self._images.append(image)

    def evaluate(self) -> dict[str, float]:
        result = {_RENAMED.get(k, k): v for k, v in self._metrics.result().items()}
        return {k: result.get(k, float("nan")) for k in INSTANCE_SCALARS}

    def pictures(self) -> dict[str, np.ndarray]:
        if not self._pairs:
            return {}
        images = data.denormalize(np.stack(self._images), self.data_cfg)
        return {"instances": instance_picture(images, self._pairs)}
