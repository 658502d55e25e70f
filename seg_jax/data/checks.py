"""Dataset defects found before training (`check_dataset`) and on the fly while batches are read
(`CheckedSource`); one function (`example_error`) words both, so a scan and a training run report a
defect with the same message.

Every defect raises `DataError` with one message naming the dataset, split, example index (and id):
    dataset 'folder' split 'train' example 3 (id 'scene003'): label value(s) [7] outside [0, 3) and ...
Per canonical example (labels marked ignored with `labels.STORED_IGNORE`):
    sizes       image, label, instances, weights and distance cover the same [H, W] pixels
    range       label values are class ids in [0, num_classes) or ignore
    all ignore  at least one label pixel is not ignored
    instances   every instance id has a foreground class under it (`labels.instances_without_class`)
Across the scanned splits (`check_dataset` only): no two examples with identical image and label bytes
(e.g. the same picture in train and validation).
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Mapping, Sequence

import grain
import numpy as np

from seg_jax import labels

_SPATIAL_KEYS = ("label", "instances", "weights", "distance")


class DataError(labels.LabelError):
    """A defect of a dataset's examples; the message names the dataset, split, example and what is wrong."""


def example_problem(example: Mapping[str, Any], *, num_classes: int) -> str | None:
    """What is wrong with one canonical example, in words, or None.

    Args:
        example: image [H, W, 3], label int [H, W] (`labels.STORED_IGNORE` = ignore), optional instances
            int [H, W] and weights float [H, W].
        num_classes: classes of the label map.
    """
    height, width = np.shape(example["image"])[:2]
    for key in _SPATIAL_KEYS:
        if key in example and np.shape(example[key])[:2] != (height, width):
            h, w = np.shape(example[key])[:2]
            return f"image is {height}x{width} pixels but {key} is {h}x{w}"
    label = np.asarray(example["label"])
    problem = labels.label_range_problem(label, num_classes=num_classes, ignore_index=labels.STORED_IGNORE)
    if problem:
        return problem
    if (label == labels.STORED_IGNORE).all():
        return (f"every label pixel is the ignore value {labels.STORED_IGNORE}, so the example counts nowhere; "
                "check its label map or leave it out")
    if "instances" in example:
        orphans = labels.instances_without_class(example["instances"], label, ignore_index=labels.STORED_IGNORE)
        if orphans.size:
            return (f"instance id(s) {orphans[:8].tolist()} have no class: every label pixel under them is "
                    f"background ({labels.BACKGROUND}) or ignore ({labels.STORED_IGNORE})")
    return None


def example_where(*, dataset: str, split: str, index: int, example_id: str = "") -> str:
    """`dataset 'shapes' split 'train' example 3 (id 'train_00003')`: how messages name an example."""
    return f"dataset {dataset!r} split {split!r} example {index}" + (f" (id {example_id!r})" if example_id else "")


def example_error(example: Mapping[str, Any], *, dataset: str, split: str, index: int,
                  num_classes: int) -> DataError | None:
    """The `DataError` of example `index` of `split`, or None when it has no defect (`example_problem`)."""
    problem = example_problem(example, num_classes=num_classes)
    if problem is None:
        return None
    where = example_where(dataset=dataset, split=split, index=index, example_id=str(example.get("id", "")))
    return DataError(f"{where}: {problem}")


class CheckedSource(Sequence):
    """Random-access canonical examples of one split, each checked as it is read (`example_error`).

    Picklable when `source` is, so grain worker processes can hold it.
    """

    def __init__(self, source: Sequence[Mapping[str, Any]], *, dataset: str, split: str, num_classes: int):
        self._source = source
        self._dataset, self._split, self._num_classes = dataset, split, num_classes

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        example = self._source[index]
        error = example_error(example, dataset=self._dataset, split=self._split, index=int(index),
                              num_classes=self._num_classes)
        if error is not None:
            raise error
        return example


@dataclasses.dataclass(frozen=True)
class SplitReport:
    """What a scan found in one split.

    Attributes:
        split: the split scanned.
        num_examples: examples in it.
        min_size, max_size: (height, width) pixels, smallest and largest of each over the images; None if empty.
        class_pixel_counts: int64 [N] labelled pixels per class.
        ignored_pixels: pixels with the ignore label.
    """

    split: str
    num_examples: int
    min_size: tuple[int, int] | None
    max_size: tuple[int, int] | None
    class_pixel_counts: np.ndarray
    ignored_pixels: int

    @property
    def class_frequencies(self) -> np.ndarray:
        """float64 [N]: each class's share of the labelled pixels (NaN without any)."""
        total = self.class_pixel_counts.sum()
        return self.class_pixel_counts / total if total else np.full(len(self.class_pixel_counts), np.nan)


@dataclasses.dataclass(frozen=True)
class DataReport:
    """The result of `check_dataset` on a dataset without defects; `text()` prints it."""

    dataset: str
    class_names: tuple[str, ...]
    splits: tuple[SplitReport, ...]

    def text(self) -> str:
        """A few lines: per split the examples, image sizes and per-class pixel frequencies by class name."""
        lines = [f"dataset {self.dataset!r}: {len(self.class_names)} classes, no defects found"]
        for report in self.splits:
            if report.min_size is None:
                lines.append(f"  {report.split}: 0 examples")
                continue
            (h0, w0), (h1, w1) = report.min_size, report.max_size
            sizes = f"{h0}x{w0} pixels" if report.min_size == report.max_size else (
                f"heights {h0}-{h1}, widths {w0}-{w1} pixels")
            frequencies = ", ".join(f"{name} {100 * f:.2f}%" for name, f in zip(self.class_names,
                                                                                 report.class_frequencies))
            total = int(report.class_pixel_counts.sum()) + report.ignored_pixels
            lines.append(f"  {report.split}: {report.num_examples} examples, {sizes}; labelled pixels: {frequencies}; "
                         f"ignored {100 * report.ignored_pixels / max(total, 1):.2f}%")
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class _Scan:
    """grain map with index: position, canonical example -> what the scan keeps of it (no raising here:
    the caller raises the first defect in split order, whatever order threads finish in)."""

    dataset: str
    split: str
    num_classes: int

    def __call__(self, index: int, example: Mapping[str, Any]) -> dict[str, Any]:
        error = example_error(example, dataset=self.dataset, split=self.split, index=index,
                              num_classes=self.num_classes)
        image, label = np.ascontiguousarray(example["image"]), np.ascontiguousarray(example["label"])
        digest = hashlib.blake2b(repr((image.shape, label.shape)).encode(), digest_size=16)
        digest.update(image.tobytes())
        digest.update(label.astype(np.int32).tobytes())
        counts = None
        if error is None:
            counts = np.bincount(label[label != labels.STORED_IGNORE].ravel(), minlength=self.num_classes)
        return {"index": index, "id": str(example.get("id", "")), "error": error, "size": image.shape[:2],
                "counts": counts, "ignored": int((label == labels.STORED_IGNORE).sum()), "digest": digest.digest()}


def check_dataset(ds: Any, *, splits: Sequence[str]) -> DataReport:
    """Scans `splits` of a resolved dataset (`catalog.Dataset`) for the defects of the module docstring.

    One pass per split with `ds.config.prefetch` grain reader threads (at least 1).

    Returns:
        The `DataReport` (per split: examples, image sizes, class pixel counts and frequencies).
    Raises:
        DataError: the first defect, in split and example order; duplicates name both examples.
        KeyError: a split the dataset does not have.
    """
    threads = max(int(ds.config.prefetch), 1)
    seen: dict[bytes, str] = {}  # digest -> where the first example with these bytes is
    reports = []
    for split in splits:
        source = ds.source(split)
        scan = _Scan(dataset=ds.name, split=split, num_classes=ds.num_classes)
        found = grain.MapDataset.source(source).map_with_index(scan).to_iter_dataset(
            grain.ReadOptions(num_threads=threads, prefetch_buffer_size=threads))
        counts, ignored, sizes = np.zeros(ds.num_classes, np.int64), 0, []
        for item in found:
            if item["error"] is not None:
                raise item["error"]
            where = example_where(dataset=ds.name, split=split, index=item["index"], example_id=item["id"])
            if item["digest"] in seen:
                raise DataError(f"{where}: image and label identical to those of {seen[item['digest']]} "
                                "(a duplicated example; across splits it leaks evaluation data into training)")
            seen[item["digest"]] = where.removeprefix(f"dataset {ds.name!r} ")
            counts += item["counts"]
            ignored += item["ignored"]
            sizes.append(item["size"])
        heights, widths = [s[0] for s in sizes], [s[1] for s in sizes]
        reports.append(SplitReport(
            split=split, num_examples=len(sizes), min_size=(min(heights), min(widths)) if sizes else None,
            max_size=(max(heights), max(widths)) if sizes else None, class_pixel_counts=counts, ignored_pixels=ignored))
    return DataReport(dataset=ds.name, class_names=tuple(ds.class_names), splits=tuple(reports))
