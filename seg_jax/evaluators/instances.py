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
from seg_jax.postprocess.threshold import POLARITIES

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


SOURCES = ("model", "otsu")
_USES_DISTANCE = ("markers", "elevation")


class InstancesEvaluator(Evaluator):
    """Options: `per_class` (instances of every foreground class, for multi-class data such as `shapes`; else one
    foreground) and `options` for `seg_jax.postprocess.instances_from_semantic` (method, markers, thresholds,
    morphology). Pixels with the ignore label count as background for both prediction and truth.

    `source`: "model" (the class probabilities, and the predicted distance map of a model trained with the loss
    term "distance") or "otsu", a classical baseline that ignores the model: the image's grey level above its Otsu
    threshold over the labelled pixels (`otsu_foreground` "bright", or below it for "dark") is the foreground
    that the same post-processing splits (`seg_jax.postprocess.otsu_probabilities`), scored by the same metrics.
    """

    OPTIONS: ClassVar[dict[str, Any]] = {"per_class": False, "options": {}, "source": "model",
                                         "otsu_foreground": "bright"}
    DEFINITIONS: ClassVar[dict[str, str]] = {_RENAMED.get(k, k): v for k, v in metrics.INSTANCE_DEFINITIONS.items()}
    needs_instances: ClassVar[bool] = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        source, options = self.options["source"], dict(self.options["options"])
        if source not in SOURCES:
            raise ValueError(f"config.evals.{self.name}.source: {source!r} is not one of {', '.join(SOURCES)}")
        if self.options["otsu_foreground"] not in POLARITIES:
            raise ValueError(f"config.evals.{self.name}.otsu_foreground: {self.options['otsu_foreground']!r} is not "
                             f"one of {', '.join(POLARITIES)}")
        self.reads_distance = any(options.get(key) == "predicted_distance" for key in _USES_DISTANCE)
        if self.reads_distance and (source != "model" or not getattr(self.task, "distance", False)):
            raise ValueError(f"config.evals.{self.name}.options: 'predicted_distance' markers or elevation need a "
                             "model with a distance channel (the loss term 'distance' and data.distance_target) "
                             "and source 'model'")
        if source == "otsu" and self.data_cfg.get("eval_size", None) is not None:
            raise ValueError(f"config.evals.{self.name}.source: 'otsu' thresholds the eval-size image and cannot "
                             "score at native resolution; leave data.eval_size unset for the classical baselines")
        if source == "otsu":
            self.DEFINITIONS = {**self.DEFINITIONS, "source": "the model is not used: foreground = grey level "
                                f"{'above' if self.options['otsu_foreground'] == 'bright' else 'at or below'} the "
                                "image's Otsu threshold, then the entry's post-processing"}

    def scalar_names(self) -> list[str]:
        return list(INSTANCE_SCALARS)

    def validate(self, dataset: Any) -> None:
        super().validate(dataset)
        if jax.process_count() > 1:
            raise NotImplementedError(f"config.evals.{self.name}: instance metrics are computed on the host of a "
                                      "single process; evaluate multi-host runs with --mode=eval in one process")

    def device_fn(self, state, batch):
        if self.options["source"] == "otsu":
            return {}  # the image alone, on the host (`process`)
        if not self.reads_distance:
            out = {"probabilities": jax.nn.softmax(self.task.predict(state.variables, batch["image"]), -1)}
        else:
            outputs = self.task.predict_outputs(state.variables, batch["image"])
            out = {"probabilities": jax.nn.softmax(outputs["logits"], -1), "distance": outputs["distance"]}
        if native.is_native(batch):
            out = {k: native.to_native(v, batch) if k == "probabilities" else native.to_native(v[..., None], batch)[..., 0]
                   for k, v in out.items()}
        return out

    def reset(self) -> None:
        self._metrics = metrics.InstanceMetrics()
        self._pairs: list[tuple[np.ndarray, np.ndarray]] = []
        self._images: list[np.ndarray] = []

    def _instances(self, probabilities: np.ndarray, distance: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        pred, scores, _ = postprocess.instances_with_scores(probabilities, distance,
                                                            per_class=self.options["per_class"],
                                                            **self.options["options"])
        return pred, scores

    def _otsu(self, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Otsu foreground probabilities `[n, H, W, 2]` of normalised images `[n, H, W, 3]`."""
        pixels = data.denormalize(images, self.data_cfg)
        return np.stack([postprocess.otsu_probabilities(image, valid=label != int(self.data_cfg.ignore_index),
                                                        foreground=self.options["otsu_foreground"])
                         for image, label in zip(pixels, labels)]) if len(pixels) else np.zeros((0,))

    def process(self, outputs, batch) -> None:
        outputs = to_host(outputs)
        flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in batch.items()}
        ignore = int(self.data_cfg.ignore_index)
        real = np.flatnonzero(flat["mask"] > 0)
        if self.options["source"] == "otsu":  # (never native: refused with data.eval_size in __init__)
            probabilities = dict(zip(real, self._otsu(flat["image"][real], flat["label"][real])))
        else:
            probabilities = outputs["probabilities"]
        for i in real:
            p, label, true = probabilities[i], flat["label"][i], flat["instances"][i]
            d = outputs["distance"][i] if "distance" in outputs else None
            if native.is_native(flat):  # crop the padding: morphology and distances must not see it
                size = flat["native_size"][i]
                p, label, true = (native.crop(x, size) for x in (p, flat["native_label"][i],
                                                                 flat["native_instances"][i]))
                d = None if d is None else native.crop(d, size)
            ignored = label == ignore
            p = np.where(ignored[..., None], np.eye(p.shape[-1], dtype=p.dtype)[0], p)
            true = np.where(ignored, 0, true)
            pred, scores = self._instances(p, d)
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
