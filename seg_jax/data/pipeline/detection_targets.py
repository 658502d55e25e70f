"""Detection targets from instance ids: boxes, classes and per-instance masks, padded to a fixed count.

Host-side NumPy, applied to each example AFTER augmentation (to the augmented `instances` and `label` maps), so
boxes and masks follow the same rescale, crop and flip as the image: `DetectionTargets` is that map step of the
training pipeline (`batches.train_batches(..., example_map=DetectionTargets(...))`).

Boxes are (x1, y1, x2, y2) in pixel-edge coordinates: an instance covering columns 3..5 has x1 = 3 and x2 = 6
(the `seg_jax.ops.boxes` convention, width x2 − x1 with no "+1").
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from scipy import ndimage

from seg_jax import labels as label_rules

TARGET_KEYS = ("boxes", "classes", "masks", "valid")


def _check_maps(instances: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    instances, labels = np.asarray(instances), np.asarray(labels)
    if instances.ndim != 2 or instances.shape != labels.shape or not np.issubdtype(instances.dtype, np.integer):
        raise ValueError(f"instances_to_targets: expected an integer instance map [H, W] and a label map of the same "
                         f"shape, got instances {instances.dtype} {instances.shape} and labels {labels.shape}")
    if instances.size and instances.min() < 0:
        raise ValueError(f"instances_to_targets: instance ids must be >= 0 (0 = background), got {instances.min()}")
    return instances.astype(np.int64, copy=False), labels.astype(np.int64, copy=False)


def instances_to_targets(instances: np.ndarray, labels: np.ndarray, *, max_instances: int | None,
                         ignore_index: int = label_rules.IGNORE_INDEX) -> dict[str, np.ndarray]:
    """Boxes, classes and masks of the instances of one example, padded to ``max_instances`` slots.

    An instance's class is the most frequent label under it, counting only foreground labels (neither 0 nor
    ``ignore_index``; ties go to the smaller class); an instance with no such pixel is dropped. When more than
    ``max_instances`` instances remain, the largest (by pixel count; ties to the smaller id) are kept — small ones are
    the cheapest to lose and the likeliest to be crop remnants. Kept instances fill the slots in increasing id order.

    Args:
      instances: int ``[H, W]`` instance ids, 0 = background (ids need not be consecutive).
      labels: int ``[H, W]`` class ids, 0 = background, ``ignore_index`` ignored.
      max_instances: G, the number of slots; None keeps every instance (G = their number; for host-side evaluation).
    Returns:
      ``boxes`` float32 ``[G, 4]`` (x1, y1, x2, y2) pixel edges; ``classes`` int32 ``[G]`` (≥ 1); ``masks`` uint8
      ``[G, H, W]`` in {0, 1}; ``valid`` bool ``[G]``. Padding slots are all zero / False.
    """
    instances, labels = _check_maps(instances, labels)
    found = []  # (area, id, window, class)
    for index, window in enumerate(ndimage.find_objects(instances)):
        if window is None:  # an unused id
            continue
        inside = instances[window] == index + 1
        values = labels[window][inside]
        values = values[(values > 0) & (values != ignore_index)]
        if values.size:
            found.append((int(inside.sum()), index + 1, window, int(np.bincount(values).argmax())))
    count = len(found) if max_instances is None else max_instances
    kept = sorted(sorted(found, key=lambda f: -f[0])[:count], key=lambda f: f[1])  # stable sorts: ties by id
    boxes = np.zeros((count, 4), np.float32)
    classes = np.zeros((count,), np.int32)
    masks = np.zeros((count, *instances.shape), np.uint8)
    for slot, (_, instance_id, (rows, cols), label) in enumerate(kept):
        boxes[slot] = (cols.start, rows.start, cols.stop, rows.stop)
        classes[slot] = label
        masks[slot, rows, cols] = instances[rows, cols] == instance_id
    return {"boxes": boxes, "classes": classes, "masks": masks, "valid": np.arange(count) < len(kept)}


def batched_instances_to_targets(instances: np.ndarray, labels: np.ndarray, *, max_instances: int,
                                 ignore_index: int = label_rules.IGNORE_INDEX) -> dict[str, np.ndarray]:
    """:func:`instances_to_targets` of every example of a batch ``[..., H, W]`` (e.g. ``[D, b, H, W]``).

    Returns the same keys with the batch dimensions in front: boxes ``[..., G, 4]``, classes ``[..., G]``,
    masks ``[..., G, H, W]``, valid ``[..., G]``.
    """
    instances, labels = np.asarray(instances), np.asarray(labels)
    if instances.ndim < 2 or instances.shape != labels.shape:
        raise ValueError(f"batched_instances_to_targets: expected instance and label maps [..., H, W] of one shape, "
                         f"got {instances.shape} and {labels.shape}")
    lead, hw = instances.shape[:-2], instances.shape[-2:]
    per_example = [instances_to_targets(i, l, max_instances=max_instances, ignore_index=ignore_index)
                   for i, l in zip(instances.reshape(-1, *hw), labels.reshape(-1, *hw))]
    return {key: np.stack([t[key] for t in per_example]).reshape(*lead, *per_example[0][key].shape)
            for key in TARGET_KEYS}


@dataclasses.dataclass(frozen=True)
class DetectionTargets:
    """Pipeline map step (picklable): batch element -> the same element plus its detection targets.

    The element's `instances` int [h, w] and `label` int [h, w] (after augmentation; `ignore_index` = the
    run's ignore label) give, by `instances_to_targets`, boxes float32 [G, 4], classes int32 [G],
    masks uint8 [G, h, w] and valid bool [G], G = `max_instances`.
    """

    max_instances: int
    ignore_index: int = label_rules.IGNORE_INDEX

    def __call__(self, element: dict[str, Any]) -> dict[str, Any]:
        if "instances" not in element:
            raise KeyError(f"DetectionTargets needs instance ids (`instances`) in each element, which has only "
                           f"{', '.join(sorted(element))}; use a dataset with instances")
        targets = instances_to_targets(element["instances"], element["label"], max_instances=self.max_instances,
                                       ignore_index=self.ignore_index)
        return {**element, **targets}
