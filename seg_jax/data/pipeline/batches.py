"""Train and eval batches of a resolved dataset (`catalog.Dataset`) through grain, sharded over processes
and local devices.

Determinism: training reads the infinite stream of global positions g = 0, 1, 2, ...; position g
is example `shuffle_epoch(g // N)[g % N]` (grain reshuffles every epoch) augmented with an RNG
seeded by (seed, g). Global batch k holds positions [k B, (k + 1) B) and process p takes the rows
[p B / P, (p + 1) B / P) of it. So a global batch is a pure function of (seed, k), whatever the
process count, device count or start step, and processes together see exactly the 1-process batch.
An `example_map` (e.g. `DetectionTargets`) is a pure function of the augmented element, so it keeps this.

Every canonical example is checked as it is read from the split (`checks.CheckedSource`): a defect stops
the run with the `DataError` that `checks.check_dataset` would raise for it.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Iterator, Sequence

import grain
import ml_collections
from absl import flags
import numpy as np

from seg_jax import labels
from seg_jax.data import checks
from seg_jax.data.catalog import Dataset
from seg_jax.data.pipeline import augment, policy

ExampleMap = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def per_device_batch_size(global_batch_size: int, *, process_count: int, num_local_devices: int) -> int:
    """global_batch_size / (process_count * num_local_devices), with a clear error if not whole."""
    shards = process_count * num_local_devices
    if global_batch_size <= 0 or global_batch_size % shards:
        raise ValueError(f"global_batch_size={global_batch_size} must be a positive multiple of process_count * "
                         f"num_local_devices = {process_count} * {num_local_devices} = {shards}")
    return global_batch_size // shards


def _check_process(process_index: int, process_count: int) -> None:
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} must be in [0, process_count={process_count})")


def _finish(example: dict[str, Any], *, mean: Sequence[float], std: Sequence[float],
            ignore_index: int) -> dict[str, np.ndarray]:
    """Batch element: image float32 [h, w, 3] normalised, label int32, weights float32, instances int32,
    distance float32 (the last two when the dataset has them)."""
    label = example["label"].astype(np.int32)
    if ignore_index != labels.STORED_IGNORE:  # a run may ignore another value than the stored one
        label = np.where(label == labels.STORED_IGNORE, ignore_index, label).astype(np.int32)
    out = {"image": augment.normalize(example["image"], mean=mean, std=std), "label": label,
           "weights": example["weights"].astype(np.float32)}
    if "instances" in example:
        out["instances"] = example["instances"].astype(np.int32)
    if "distance" in example:
        out["distance"] = example["distance"].astype(np.float32)
    return out


def _with_weights(example: dict[str, Any]) -> dict[str, Any]:
    """Adds weights = 1 when the dataset has no weight map (padding then sets 0)."""
    if "weights" in example:
        return example
    return {**example, "weights": np.ones(example["label"].shape, np.float32)}


@dataclasses.dataclass(frozen=True)
class TrainTransform:
    """grain random map: canonical example, rng -> augmented (`policy.augment_example`), normalised batch element."""

    crop_size: tuple[int, int]
    scale_range: tuple[float, float]
    hflip: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    ignore_index: int
    augment: policy.AugmentOptions = policy.AugmentOptions()  # data.augment; all off by default

    def __call__(self, example: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
        example = policy.augment_example(_with_weights(example), rng, crop_size=self.crop_size,
                                         scale_range=self.scale_range, hflip=self.hflip,
                                         ignore_index=self.ignore_index, options=self.augment)
        return _finish(example, mean=self.mean, std=self.std, ignore_index=self.ignore_index)


def native_truth(example: dict[str, Any], *, native_size: tuple[int, int], eval_size: Sequence[int],
                 ignore_index: int) -> dict[str, np.ndarray]:
    """The untouched truth of a canonical example for scoring at its native resolution (`evaluators.native`):
    native_label int32 [H, W] padded with `ignore_index`, native_instances int32 [H, W] padded with 0 (when the
    example has instances), native_size and fitted_size int32 [2] (px), (H, W) = `native_size` (the split's
    largest image)."""
    label = example["label"].astype(np.int32)
    if ignore_index != labels.STORED_IGNORE:
        label = np.where(label == labels.STORED_IGNORE, ignore_index, label).astype(np.int32)
    height, width = label.shape
    extra = ((0, native_size[0] - height), (0, native_size[1] - width))
    out = {"native_label": np.pad(label, extra, constant_values=ignore_index),
           "native_size": np.asarray([height, width], np.int32),
           "fitted_size": np.asarray(augment.fitted_size(height, width, eval_size), np.int32)}
    if "instances" in example:
        out["native_instances"] = np.pad(example["instances"].astype(np.int32), extra)
    return out


@dataclasses.dataclass(frozen=True)
class EvalTransform:
    """grain map with index: position, canonical example -> batch element with `mask` and `index`.

    With `eval_size`, also the `native_truth` keys, padded to `native_size` (the split's largest image).
    Positions >= num_examples are padding: mask 0, index -1, label all ignore, weights 0, instances and distance 0.
    """

    num_examples: int
    eval_size: tuple[int, int] | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    ignore_index: int
    native_size: tuple[int, int] | None = None

    def __call__(self, position: int, example: dict[str, Any]) -> dict[str, np.ndarray]:
        example = _with_weights(example)
        native = {}
        if self.eval_size is not None:
            if self.native_size is not None:
                native = native_truth(example, native_size=self.native_size, eval_size=self.eval_size,
                                      ignore_index=self.ignore_index)
            example = augment.fit_and_pad(example, self.eval_size, ignore_index=self.ignore_index)
        out = {**_finish(example, mean=self.mean, std=self.std, ignore_index=self.ignore_index), **native}
        real = position < self.num_examples
        out["mask"] = np.float32(real)
        out["index"] = np.int32(position if real else -1)
        if not real:
            out["label"] = np.full_like(out["label"], self.ignore_index)
            out["weights"] = np.zeros_like(out["weights"])
            for key, fill in (("instances", 0), ("distance", 0), ("native_label", self.ignore_index),
                              ("native_instances", 0)):
                if key in out:
                    out[key] = np.full_like(out[key], fill)
        return out


def _stack(elements: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """grain batch function: stacks elements, with a clear error when image sizes differ."""
    sizes = {element["image"].shape[:2] for element in elements}
    if len(sizes) > 1:
        raise ValueError(f"images of different sizes {sorted(sizes)} cannot form one batch; "
                         "set data.eval_size = (height, width)")
    return {key: np.stack([element[key] for element in elements]) for key in elements[0]}


def _split_devices(batch: dict[str, np.ndarray], *, num_devices: int) -> dict[str, np.ndarray]:
    """[D * b, ...] -> [D, b, ...] for every key."""
    return {key: value.reshape((num_devices, -1) + value.shape[1:]) for key, value in batch.items()}


def _checked_source(dataset: Dataset, split: str) -> checks.CheckedSource:
    return checks.CheckedSource(dataset.source(split), dataset=dataset.name, split=split,
                                num_classes=dataset.num_classes)


def _iterate(ds: grain.MapDataset, data_cfg: ml_collections.ConfigDict) -> Iterator[dict[str, np.ndarray]]:
    threads = int(data_cfg.prefetch)
    iter_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=max(threads, 1)))
    if data_cfg.num_workers > 0:
        if not flags.FLAGS.is_parsed():  # grain's worker processes read absl flags
            raise RuntimeError("data.num_workers > 0 needs parsed absl flags: run under absl.app.run, or call "
                               "absl.flags.FLAGS.mark_as_parsed() first")
        iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=int(data_cfg.num_workers)))
    return iter(iter_ds)


def _shards(ds: grain.MapDataset, *, rows: int, first: int, process_index: int, process_count: int,
            num_local_devices: int) -> grain.MapDataset:
    """Batches of this process's `rows` rows of each global batch, from global batch `first` on."""
    ds = ds.batch(rows, batch_fn=_stack)
    ds = ds[first * process_count + process_index::process_count]
    return ds.map(functools.partial(_split_devices, num_devices=num_local_devices))


def train_batches(dataset: Dataset, *, global_batch_size: int, seed: int, start_step: int = 0,
                  num_local_devices: int, process_index: int = 0, process_count: int = 1,
                  example_map: ExampleMap | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Endless training batches of `dataset.config.train_split` for this process, from global step `start_step`.

    Yields dicts with image float32 [D, b, h, w, 3] (normalised), label int32 [D, b, h, w],
    weights float32 [D, b, h, w] and, for datasets with instances, instances int32 [D, b, h, w] (and with
    `data.distance_target`, distance float32 [D, b, h, w]);
    D = num_local_devices, b = global_batch_size / (process_count * D), (h, w) = data.crop_size.
    `example_map`, a picklable callable, maps each augmented, normalised element (the keys above without
    [D, b]) to the element batched, e.g. `DetectionTargets` adds boxes/classes/masks/valid.
    See the module docstring for the determinism guarantees.

    Raises:
        ValueError: a batch size that does not divide over processes and devices, an empty split, or a bad
            `data.augment` value (named).
        DataError: (while iterating) a defect of an example read (`checks`).
    """
    _check_process(process_index, process_count)
    per_device_batch_size(global_batch_size, process_count=process_count, num_local_devices=num_local_devices)
    data_cfg = dataset.config
    source = _checked_source(dataset, data_cfg.train_split)
    if not len(source):
        raise ValueError(f"split {data_cfg.train_split!r} of dataset {data_cfg.name!r} is empty")
    shuffle_seed, augment_seed = (int(s) for s in np.random.SeedSequence(seed).generate_state(2))
    transform = TrainTransform(
        crop_size=tuple(data_cfg.crop_size), scale_range=tuple(data_cfg.scale_range), hflip=bool(data_cfg.hflip),
        mean=tuple(data_cfg.mean), std=tuple(data_cfg.std), ignore_index=int(data_cfg.ignore_index),
        augment=policy.augment_options(data_cfg.get("augment", None)))
    # Shuffle before repeat: grain's shuffle draws a new permutation for each epoch of positions.
    ds = grain.MapDataset.source(source).shuffle(seed=shuffle_seed).repeat()
    ds = ds.random_map(transform, seed=augment_seed)  # RNG of element g depends on (seed, g) only.
    if example_map is not None:
        ds = ds.map(example_map)
    ds = _shards(ds, rows=global_batch_size // process_count, first=start_step, process_index=process_index,
                 process_count=process_count, num_local_devices=num_local_devices)
    return _iterate(ds, data_cfg)


def num_eval_batches(num_examples: int, global_batch_size: int) -> int:
    """Batches that cover `num_examples` once, the last one padded: ceil(N / B)."""
    return math.ceil(num_examples / global_batch_size)


def eval_batches(dataset: Dataset, *, split: str, global_batch_size: int, num_local_devices: int,
                 process_index: int = 0, process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """Every example of `split` of `dataset` exactly once over all processes, in split order.

    Every process yields ceil(N / global_batch_size) batches (the same count, as collectives need).
    Keys as in `train_batches` plus mask float32 [D, b] (1 real, 0 padding) and index int32 [D, b]
    (position in the split, -1 for padding); padded rows have label = ignore, weights 0 and instances 0.
    `instances` are the true instance ids whatever `data.targets` is, for instance metrics.
    Spatial size: native (all images must share it) or data.eval_size. With data.eval_size, also the untouched
    truth for scoring at native resolution (`native_truth`): native_label int32 [D, b, H, W] (padded with ignore),
    native_instances int32 [D, b, H, W] (padded with 0; datasets with instances), native_size and fitted_size
    int32 [D, b, 2], (H, W) the largest image size of the split (`Dataset.max_image_size`).
    Examples are checked as in training.
    """
    _check_process(process_index, process_count)
    per_device_batch_size(global_batch_size, process_count=process_count, num_local_devices=num_local_devices)
    data_cfg = dataset.config
    source = _checked_source(dataset, split)
    total = num_eval_batches(len(source), global_batch_size) * global_batch_size
    eval_size = tuple(data_cfg.eval_size) if data_cfg.eval_size else None
    transform = EvalTransform(
        num_examples=len(source), eval_size=eval_size, mean=tuple(data_cfg.mean), std=tuple(data_cfg.std),
        ignore_index=int(data_cfg.ignore_index),
        native_size=dataset.max_image_size(split) if eval_size and len(source) else None)
    ds = grain.MapDataset.source(source).repeat(max(1, math.ceil(total / max(len(source), 1))))[:total]
    ds = _shards(ds.map_with_index(transform), rows=global_batch_size // process_count, first=0,
                 process_index=process_index, process_count=process_count, num_local_devices=num_local_devices)
    return _iterate(ds, data_cfg)


def denormalize(images: Any, data_cfg: ml_collections.ConfigDict) -> np.ndarray:
    """uint8 [..., 3] pictures from normalised float images [..., 3] (inverse of the batch normalisation)."""
    return augment.to_uint8(images, mean=tuple(data_cfg.mean), std=tuple(data_cfg.std))
