"""Label rules shared by every stage: stored values, ignore label, background, instance ids, and their checks.

Stored datasets (TFDS, the folder importer) and canonical examples use
    class ids      uint8 / int32 in [0, num_classes), `BACKGROUND` = 0 is the background class,
    `STORED_IGNORE` = 255 for pixels that count nowhere (unlabelled, borders, padding);
    instance ids   int32 >= 0, `NO_INSTANCE` = 0 off every object; ids need not be consecutive.
A run may ignore another value (`config.data.ignore_index`); the pipeline maps `STORED_IGNORE` to it, and
losses and metrics take it as `ignore_index`, defaulting to `IGNORE_INDEX`.

No heavy imports here: losses, metrics, the folder importer and the pipeline all use this module.
"""
from __future__ import annotations

import numpy as np

STORED_IGNORE = 255   # the ignore value of every stored label map
IGNORE_INDEX = 255    # default `ignore_index` of losses, metrics and configs
BACKGROUND = 0        # class id of the background class
NO_INSTANCE = 0       # instance id of pixels that belong to no object
MAX_STORED_CLASSES = 255  # 8-bit stored label maps: class ids 0..254, 255 is the ignore value


class LabelError(ValueError):
    """A label or instance map breaks the rules above; the message names where and what."""


def out_of_range(labels: np.ndarray, *, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """The sorted distinct values of `labels` that are neither a class id in [0, num_classes) nor ignore."""
    labels = np.asarray(labels)
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= num_classes))
    return np.unique(labels[bad])


def label_range_problem(labels: np.ndarray, *, num_classes: int, ignore_index: int = IGNORE_INDEX) -> str | None:
    """What is wrong with the range of `labels`, in words (the message of `check_label_range` after
    "where: "), or None when every label is a class id in [0, num_classes) or ignore."""
    bad = out_of_range(labels, num_classes=num_classes, ignore_index=ignore_index)
    if not bad.size:
        return None
    return (f"label value(s) {bad[:8].tolist()} outside [0, {num_classes}) and not the ignore label "
            f"{ignore_index}; check the dataset's labels or its number of classes")


def check_label_range(labels: np.ndarray, *, num_classes: int, ignore_index: int = IGNORE_INDEX,
                      where: str) -> None:
    """Raises `LabelError` naming `where` when a label lies outside [0, num_classes) and is not ignore."""
    problem = label_range_problem(labels, num_classes=num_classes, ignore_index=ignore_index)
    if problem:
        raise LabelError(f"{where}: {problem}")


def instances_without_class(instances: np.ndarray, labels: np.ndarray, *,
                            ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Instance ids (sorted) none of whose pixels has a foreground class (all background or ignore)."""
    instances, labels = np.asarray(instances), np.asarray(labels)
    ids = np.unique(instances[instances != NO_INSTANCE])
    with_class = np.unique(instances[(instances != NO_INSTANCE) & (labels != BACKGROUND) & (labels != ignore_index)])
    return np.setdiff1d(ids, with_class)
