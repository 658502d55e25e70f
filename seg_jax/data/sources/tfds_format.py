"""The TFDS example format that seg_jax writes, and the canonical example every dataset maps to.

Stored format (what our own builders write, read back without TensorFlow):
    image      PNG, uint8 [H, W, 3]   (encoded with Pillow: `tfds.features.Image` needs TF for arrays)
    label      PNG, uint8 [H, W, 1]   class ids, `labels.STORED_IGNORE` (255) = ignore
    instances  zlib Tensor, uint16 [H, W]   instance ids, 0 = background (optional)
    weights    zlib Tensor, float32 [H, W]  per-pixel loss weights (optional)
    border_label  PNG, uint8 [H, W, 1]   0 background, 1 interior, 2 border, 255 = ignore (optional)
    distance   zlib Tensor, float32 [H, W]  per-instance normalised distance to the outline (optional)
    id         Text
Class names live in the builder's metadata (`metadata.json`), so a directory is self-describing.
`weights`, `border_label` and `distance` are derived from the instance ids by `stored_targets`.

Canonical example (host-side numpy, what `catalog.Dataset.source` returns):
    image uint8 [H, W, 3], label int32 [H, W] (`labels.STORED_IGNORE` = ignore), optional instances int32 [H, W],
    optional weights float32 [H, W], optional distance float32 [H, W], id str.
"""
from __future__ import annotations

import contextlib
import io
import logging
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.core.utils import tqdm_utils

VERSION = "1.0.0"


class StoredBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the builders seg_jax writes itself (kept out of TFDS's global name registry)."""

    VERSION = tfds.core.Version(VERSION)


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 [H, W], [H, W, 1] or [H, W, 3] array (Pillow; no TensorFlow)."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"encode_png expects uint8, got {array.dtype}")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)  # level 6 is ~3x slower, ~same size
    return buffer.getvalue()


def stored_features(*, has_instances: bool, has_weights: bool = False, has_border_label: bool = False,
                    has_distance: bool = False) -> tfds.features.FeaturesDict:
    """The TFDS feature dict of the stored format above."""
    features: dict[str, Any] = {
        "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
        "label": tfds.features.Image(shape=(None, None, 1), dtype=np.uint8),
        "id": tfds.features.Text(),
    }
    if has_instances:
        features["instances"] = tfds.features.Tensor(shape=(None, None), dtype=np.uint16, encoding="zlib")
    if has_weights:
        features["weights"] = tfds.features.Tensor(shape=(None, None), dtype=np.float32, encoding="zlib")
    if has_border_label:
        features["border_label"] = tfds.features.Image(shape=(None, None, 1), dtype=np.uint8)
    if has_distance:
        features["distance"] = tfds.features.Tensor(shape=(None, None), dtype=np.float32, encoding="zlib")
    return tfds.features.FeaturesDict(features)


def stored_info(builder: tfds.core.DatasetBuilder, *, class_names: Sequence[str], has_instances: bool,
                description: str, has_weights: bool = False, has_border_label: bool = False,
                has_distance: bool = False, metadata: Mapping[str, Any] | None = None) -> tfds.core.DatasetInfo:
    """DatasetInfo of a seg_jax-written builder; class names (and any JSON-able `metadata`) go to
    `metadata.json`.

    `DatasetInfo` is built directly: `dataset_info_from_configs` would scan the Python package folder.
    """
    return tfds.core.DatasetInfo(
        builder=builder,
        description=description,
        features=stored_features(has_instances=has_instances, has_weights=has_weights,
                                 has_border_label=has_border_label, has_distance=has_distance),
        metadata=tfds.core.MetadataDict(class_names=list(class_names), **(metadata or {})),
    )


def stored_example(*, image: np.ndarray, label: np.ndarray, instances: np.ndarray | None,
                   example_id: str, weights: np.ndarray | None = None,
                   border_label: np.ndarray | None = None, distance: np.ndarray | None = None) -> dict[str, Any]:
    """Encodes one example in the stored format.

    Args:
        image: uint8 [H, W, 3], or its PNG bytes (copied as they are).
        label: uint8 [H, W] class ids (255 = ignore).
        instances: integer [H, W] instance ids in [0, 65535], or None.
        example_id: a name unique within the dataset.
        weights: float32 [H, W] per-pixel loss weights, or None.
        border_label: uint8 [H, W] border-aware classes (255 = ignore), or None.
        distance: float32 [H, W] normalised per-instance distance (`derived.targets.instance_distance`), or None.
    """
    png = image if isinstance(image, bytes) else encode_png(image)
    example: dict[str, Any] = {"image": png, "label": encode_png(label), "id": example_id}
    if instances is not None:
        example["instances"] = np.asarray(instances, dtype=np.uint16)
    if weights is not None:
        example["weights"] = np.asarray(weights, dtype=np.float32)
    if border_label is not None:
        example["border_label"] = encode_png(border_label)
    if distance is not None:
        example["distance"] = np.asarray(distance, dtype=np.float32)
    return example


def build(builder: tfds.core.DatasetBuilder) -> None:
    """Writes the builder's files unless they exist (statistics skipped: they are not needed)."""
    config = tfds.download.DownloadConfig(compute_stats=tfds.download.ComputeStatsMode.SKIP)
    builder.download_and_prepare(download_config=config)


@contextlib.contextmanager
def quiet_preparation() -> Iterator[None]:
    """While the body runs: no TFDS progress bars, and TFDS's absl log records below ERROR dropped (e.g.
    "Using custom data configuration"); both restored afterwards, also on error. Our builders that read
    local files also silence TFDS's "Downloading and preparing dataset ..." line (`folder_importer`)."""
    absl_logger = logging.getLogger("absl")
    was_active, level = getattr(tqdm_utils, "_active", True), absl_logger.level
    tfds.display_progress_bar(False)
    absl_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        tfds.display_progress_bar(was_active)
        absl_logger.setLevel(level)


def stored_to_canonical(example: Mapping[str, Any], *, label_key: str = "label") -> dict[str, Any]:
    """Canonical example from a decoded stored example (see the module docstring for both formats).

    `label_key` names the stored class map that becomes the canonical `label` ("label" or "border_label").
    """
    out: dict[str, Any] = {
        "image": np.asarray(example["image"], dtype=np.uint8),
        "label": np.asarray(example[label_key])[..., 0].astype(np.int32),
    }
    if "instances" in example:
        out["instances"] = np.asarray(example["instances"]).astype(np.int32)
    if "weights" in example:
        out["weights"] = np.asarray(example["weights"], dtype=np.float32)
    if "distance" in example:
        out["distance"] = np.asarray(example["distance"], dtype=np.float32)
    out["id"] = as_text(example.get("id", ""))
    return out


def as_text(value: Any) -> str:
    """A TFDS Text feature (bytes when decoded) as str."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def example_bytes(example: Mapping[str, Any]) -> int:
    """Bytes of an example's arrays."""
    return sum(value.nbytes for value in example.values() if isinstance(value, np.ndarray))


class CanonicalSource(Sequence):
    """Random-access canonical examples: a TFDS data source followed by a mapping function.

    With `cache_bytes` > 0, a split whose canonical examples fit (its first example's bytes × its length) keeps each
    example in memory after its first read, so later epochs skip PNG / zlib decoding (for the built-in datasets most
    of what an example costs the input pipeline). Cached arrays are read-only: a transform that wrote into its input
    would otherwise change the next epoch's example (callers get a copy of the mapping, not of the arrays).

    Picklable when `to_canonical` is (module-level functions and partials of them are), so grain
    worker processes can hold it; each process then fills its own cache.
    """

    def __init__(self, records: Sequence[Mapping[str, Any]], to_canonical: Callable[[Mapping[str, Any]], dict], *,
                 cache_bytes: int = 0):
        self._records = records
        self._to_canonical = to_canonical
        self._cache_bytes = int(cache_bytes)
        self._keep: bool | None = None  # whether the split fits: decided on the first read
        self._cache: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        index = int(index)
        cached = self._cache.get(index)
        if cached is not None:
            return dict(cached)  # a copy of the mapping: callers may add or replace keys
        example = self._to_canonical(self._records[index])
        if self._keep is None:
            self._keep = 0 < example_bytes(example) * len(self) <= self._cache_bytes
        if self._keep:
            for value in example.values():
                if isinstance(value, np.ndarray):
                    value.flags.writeable = False
            self._cache[index] = example  # grain's reader threads may race here: both store equal examples
            return dict(example)
        return example

    @property
    def caching(self) -> bool:
        """Whether examples are kept in memory (known after the first read)."""
        return bool(self._keep)

    def __getstate__(self) -> dict:  # worker processes start with an empty cache
        return {**self.__dict__, "_cache": {}}

    def __repr__(self) -> str:
        return f"CanonicalSource({self._records!r})"
