"""Semantic evaluators: confusion-matrix metrics, per-image mIoU and boundary accuracy; the same after a dense CRF.

Statistics travel as sums psummed over devices and are normalised once, on the host, over the whole split (never
a mean of per-batch numbers). Every metric is computed at each image's native resolution: with `data.eval_size` the
logits (CRF: probabilities) are resized back to it (`native`); the pictures show the eval-size input.
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from seg_jax import data, metrics, visualize
from seg_jax.evaluators import native
from seg_jax.evaluators.base import Evaluator, summed, to_host
from seg_jax.metrics.boundary import boundary_counts
from seg_jax.predict.tta import is_off, tta_options, with_tta

# Titles of the picture columns after the image, by output key.
COLUMN_TITLES = {"label": "truth", "prediction": "prediction", "with_crf_prediction": "after CRF"}
OVERLAY_ALPHA = 0.5  # opacity of the class colours in the pictures' last column (`visualize.overlay`)
SUMMED = ("confusion", "per_image_iou_sum", "per_image_count", "boundary_correct", "boundary_total")


def prediction_stats(prediction: jax.Array, batch: dict[str, jax.Array], *, num_classes: int, ignore_index: int,
                     boundary_width: int, axis_name: str = "batch") -> dict[str, jax.Array]:
    """Statistics of one device's prediction int32 `[b, h, w]`, summed over the real examples of all devices.

    `batch`: `label` int32 `[b, h, w]`, `mask` float32 `[b]` (0 = padding). Returns `confusion` int32 `[N, N]`,
    (`per_image_iou_sum`, `per_image_count`) of the per-image mean IoU, (`boundary_correct`, `boundary_total`).
    """
    example_mask = batch["mask"][:, None, None] * jnp.ones(batch["label"].shape, jnp.float32)
    per_image = metrics.batched_confusion_matrix(
        jnp.where(example_mask > 0, prediction, 0), jnp.where(example_mask > 0, batch["label"], ignore_index),
        num_classes=num_classes, ignore_index=ignore_index)
    image_miou = metrics.mean_iou(per_image)  # NaN for an image with no counted pixel
    image_valid = (batch["mask"] > 0) & ~jnp.isnan(image_miou)
    correct, total = boundary_counts(prediction, batch["label"], width=boundary_width, ignore_index=ignore_index,
                                     example_mask=batch["mask"])
    stats = {"confusion": per_image.sum(0), "per_image_iou_sum": jnp.sum(jnp.where(image_valid, image_miou, 0.0)),
             "per_image_count": jnp.sum(image_valid), "boundary_correct": correct, "boundary_total": total}
    return jax.lax.psum(stats, axis_name)


def summarize_stats(sums: dict[str, np.ndarray], *, class_names: tuple[str, ...]) -> dict[str, float]:
    """Flat scalars from the split's summed `prediction_stats`: `mean_iou`, `pixel_accuracy`, `mean_dice`,
    `per_image_mean_iou`, `num_images`, `boundary_accuracy`, `iou/<class>`, `dice/<class>`."""
    record = metrics.summarize(sums["confusion"], class_names=class_names)
    count = int(sums["per_image_count"])
    total = int(sums["boundary_total"])
    scalars = {k: record[k] for k in ("mean_iou", "pixel_accuracy", "mean_dice")}
    scalars["per_image_mean_iou"] = float(sums["per_image_iou_sum"]) / count if count else float("nan")
    scalars["num_images"] = count
    scalars["boundary_accuracy"] = int(sums["boundary_correct"]) / total if total else float("nan")
    for kind in ("iou", "dice"):
        scalars.update({f"{kind}/{name}": value for name, value in record[kind].items()})
    return scalars


class SemanticEvaluator(Evaluator):
    """`type: semantic`. Options: `boundary_width` (px around true label changes for boundary accuracy); `tta`
    (`{"flips": bool, "scales": (float, ...)}`, default off: test-time augmentation, `seg_jax.predict.tta`)."""

    OPTIONS: ClassVar[dict[str, Any]] = {"boundary_width": 3, "tta": None}
    DEFINITIONS: ClassVar[dict[str, str]] = {
        **metrics.DEFINITIONS,
        "boundary_accuracy": "pixel accuracy within boundary_width px of a change of true label (trimap accuracy)",
        "num_images": "real (not padding) images of the split with at least one counted pixel",
        "iou/<class>, dice/<class>": "per-class IoU and Dice from the summed confusion matrix",
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tta = tta_options(self.options["tta"], field=f"evals.{self.name}.tta")
        if not is_off(self.tta):
            self.DEFINITIONS = {**self.DEFINITIONS, "tta": f"predictions average the softmax of "
                                f"{'flipped and unflipped ' if self.tta['flips'] else ''}views at scales "
                                f"{', '.join(f'{s:g}' for s in self.tta['scales'])} (seg_jax.predict.tta)"}
        self.DEFINITIONS = {**self.DEFINITIONS, "ignore_index": f"label {int(self.data_cfg.ignore_index)} is not "
                            f"counted; boundary_width = {int(self.options['boundary_width'])} px"}

    def scalar_names(self) -> list[str]:
        return (["mean_iou", "pixel_accuracy", "mean_dice", "per_image_mean_iou", "num_images", "boundary_accuracy"]
                + [f"{kind}/{name}" for kind in ("iou", "dice") for name in self.class_names])

    def _stats(self, values: jax.Array, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """`prediction_stats` of the argmax of `values` [b, h, w, N] (logits or probabilities), at each image's
        native resolution (`native.scored`)."""
        prediction, truth = native.scored(values, batch)
        return prediction_stats(prediction, truth, num_classes=len(self.class_names),
                                ignore_index=int(self.data_cfg.ignore_index),
                                boundary_width=int(self.options["boundary_width"]))

    def logits(self, state, images: jax.Array) -> jax.Array:
        """The task's logits `[b, h, w, N]` of normalised images `[b, h, w, 3]`, through this entry's `tta` when
        it is on (then log-probabilities averaged over the views, `seg_jax.predict.tta.tta_logits`)."""
        return with_tta(self.task.predict, self.tta)(state.variables, images)

    def device_fn(self, state, batch):
        logits = self.logits(state, batch["image"])
        return {**self._stats(logits, batch), "prediction": jnp.argmax(logits, -1).astype(jnp.int32)}

    def reset(self) -> None:
        self._sums: dict[str, np.ndarray] = {}
        self._first: dict[str, np.ndarray] | None = None

    def process(self, outputs, batch) -> None:
        for key, value in summed(outputs, SUMMED).items():  # float64/int64 on the host: counts can be large
            self._sums[key] = self._sums.get(key, 0) + value
        if self._first is None and self.num_pictures:
            columns = to_host({k: v for k, v in outputs.items() if k.endswith("prediction")})
            self._first = {**columns, **{k: batch[k].reshape(-1, *batch[k].shape[2:]) for k in ("image", "label",
                                                                                                 "mask")}}

    def evaluate(self) -> dict[str, float]:
        return summarize_stats(self._sums, class_names=self.class_names)

    def pictures(self) -> dict[str, np.ndarray]:
        if self._first is None:
            return {}
        first = self._first
        keep = first["mask"] > 0
        images = data.denormalize(first["image"][keep][:self.num_pictures], self.data_cfg)
        colour = functools.partial(visualize.colorize, num_classes=len(self.class_names),
                                   ignore_index=int(self.data_cfg.ignore_index))
        columns = ["label"] + sorted(k for k in first if k.endswith("prediction"))  # prediction, then crf_...
        final = first[columns[-1]][keep]  # blended on the image, its class boundaries marked
        rows = [[image] + [colour(first[k][keep][i]) for k in columns]
                + [visualize.overlay(image, final[i], num_classes=len(self.class_names), alpha=OVERLAY_ALPHA)]
                for i, image in enumerate(images)]
        titles = ["image"] + [COLUMN_TITLES.get(k, k.replace("_", " ")) for k in columns]
        titles.append(f"{titles[-1]} on image")
        return {"predictions": visualize.figure(rows, titles=titles, legend=visualize.class_legend(
            self.class_names))} if rows else {}


class CRFEvaluator(SemanticEvaluator):
    """`type: crf`: the semantic metrics of the predictions after a dense CRF (`seg_jax.postprocess.dense_crf`).

    Options: pydensecrf's parameter names (`iterations`, `gaussian_sxy`, `gaussian_compat`, `bilateral_sxy`,
    `bilateral_srgb`, `bilateral_compat`) and the grid method's (`method`, `downsample`, `modes`); `boundary_width`
    and `tta` as for `type: semantic` (the CRF then refines the augmented prediction). The picture
    shows image | truth | prediction | prediction after the CRF. A subclass overriding `crf` compares other CRFs
    through the same code (`benchmarks/crf_task.py`).
    """

    OPTIONS: ClassVar[dict[str, Any]] = {
        "boundary_width": 3, "iterations": 5, "gaussian_sxy": 3.0, "gaussian_compat": 3.0, "bilateral_sxy": 80.0,
        "bilateral_srgb": 13.0, "bilateral_compat": 10.0, "method": "grid", "downsample": None, "modes": 16,
        "tta": None}
    TRACED = ("gaussian_compat", "bilateral_compat")  # `dense_crf`'s Potts weights may be traced; the rest size it

    def crf_options(self) -> dict[str, Any]:
        return {k: v for k, v in self.options.items() if k not in SemanticEvaluator.OPTIONS}

    def crf(self, logits: jax.Array, image: jax.Array) -> jax.Array:
        """Probabilities `[b, h, w, N]` from logits `[b, h, w, N]` and the image `[b, h, w, 3]` in 0..255."""
        from seg_jax.postprocess.crf import dense_crf
        return dense_crf(logits, image, **self.crf_options())

    def device_fn(self, state, batch):
        logits = self.logits(state, batch["image"])
        image = batch["image"] * jnp.asarray(self.data_cfg.std) + jnp.asarray(self.data_cfg.mean)
        probabilities = self.crf(logits, image)  # at the eval size: the CRF's kernels see the input's pixels
        return {**self._stats(probabilities, batch), "prediction": jnp.argmax(logits, -1).astype(jnp.int32),
                "with_crf_prediction": jnp.argmax(probabilities, -1).astype(jnp.int32)}
