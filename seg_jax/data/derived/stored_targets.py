"""Training targets derived from instance ids, computed once when a dataset is prepared and stored with it.

A data config asks for them with (see `config.base_config`)
    data.targets = "semantic" | "border", data.border_width      (the class map trained on)
    data.weight_map = None | "unet", data.weight_map_w0, data.weight_map_sigma   (the per-pixel loss weights)
    data.distance_target = None | "normalized"                   (the regressed distance map)
Anything but the plain semantic map without weight map or distance target is read from a derived TFDS dataset
`<base name>_targets/<builder config>/<base version>` written next to the base dataset (nuclei, shapes, or a
folder converted with instances). Its examples are the base examples (image, label, instances, id) plus
    border_label  PNG uint8 [H, W, 1]     `targets.border_targets(instances, width=border_width)`; pixels whose
                                          stored label is ignored stay `STORED_IGNORE`  (targets = "border")
    weights       zlib float32 [H, W]     `targets.unet_weight_map(instances, class_weights=w_c,
                                          labels=<trained class map>, w0, sigma)`           (weight_map = "unet")
    distance      zlib float32 [H, W]     `targets.instance_distance(instances)`  (distance_target = "normalized")
The builder config name holds every value the stored arrays depend on, e.g.
`default_border2_unet_w0=10.0_sigma=5.0` or `default_distance_normalized` (values as Python writes floats, so it
is exact): another w0, sigma, border width or distance target prepares its own copy once, and a stale copy is
never read for different values.

w_c, the U-Net class-balancing weights, are "inverse_frequency" weights (`statistics`) of the trained
class map (semantic or border classes) over the base dataset's whole `train` split: w_c = 1 / (K f_c), so
the mean w_c per labelled pixel is 1 and the separation term w0 keeps its meaning. They are written to the
derived dataset's `metadata.json` (`class_weights`, with the pixel counts they come from).
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Mapping

import grain
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from seg_jax import labels
from seg_jax.data.derived import statistics
from seg_jax.data.derived.targets import DISTANCE_TARGETS
from seg_jax.data.derived import targets as target_maps
from seg_jax.data.sources import tfds_format

TARGETS = ("semantic", "border")
WEIGHT_MAPS = (None, "unet")
CLASS_WEIGHT_METHOD = "inverse_frequency"
_STATISTICS_SPLIT = "train"


@dataclasses.dataclass(frozen=True)
class TargetChoice:
    """The training targets of a data config, validated (module docstring).

    Attributes:
        targets: "semantic" (the stored class map) or "border" (background / interior / border).
        border_width: pixels, border thickness for "border" (>= 1).
        weight_map: None or "unet".
        w0: weight of the U-Net separation term (>= 0).
        sigma: pixels, width of the U-Net separation term (> 0).
        distance: None or "normalized" (`targets.instance_distance`, stored as `distance`).
    """

    targets: str = "semantic"
    border_width: int = 2
    weight_map: str | None = None
    w0: float = 10.0
    sigma: float = 5.0
    distance: str | None = None

    @property
    def derived(self) -> bool:
        """Whether these targets come from instance ids (and so from a derived dataset)."""
        return self.targets != "semantic" or self.weight_map is not None or self.distance is not None

    @property
    def num_classes(self) -> int | None:
        """Classes of the trained class map when the targets fix them (3 for "border"), else None."""
        return len(target_maps.BORDER_CLASS_NAMES) if self.targets == "border" else None

    def config_name(self, variant: str) -> str:
        """The derived builder config name: `variant` plus every value the stored arrays depend on."""
        parts = [variant]
        if self.targets == "border":
            parts.append(f"border{self.border_width}")
        if self.weight_map == "unet":
            parts.append(f"unet_w0={self.w0!r}_sigma={self.sigma!r}")
        if self.distance is not None:
            parts.append(f"distance_{self.distance}")
        return "_".join(parts)


def choice_from_config(data_cfg: ml_collections.ConfigDict) -> TargetChoice:
    """The validated `TargetChoice` of `data_cfg` (keys missing from older configs take their defaults).

    Raises:
        ValueError: an unknown `data.targets` / `data.weight_map` / `data.distance_target` (the message lists the
            valid values) or an
            out-of-range `data.border_width`, `data.weight_map_w0`, `data.weight_map_sigma`.
    """
    default = TargetChoice()
    targets = data_cfg.get("targets", default.targets)
    weight_map = data_cfg.get("weight_map", default.weight_map)
    if targets not in TARGETS:
        raise ValueError(f"unknown data.targets {targets!r}; valid values: {', '.join(TARGETS)}")
    if weight_map not in WEIGHT_MAPS:
        raise ValueError(f"unknown data.weight_map {weight_map!r}; valid values: "
                         f"{', '.join(repr(value) for value in WEIGHT_MAPS)}")
    distance = data_cfg.get("distance_target", default.distance)
    if distance not in DISTANCE_TARGETS:
        raise ValueError(f"unknown data.distance_target {distance!r}; valid values: "
                         f"{', '.join(repr(value) for value in DISTANCE_TARGETS)}")
    width = data_cfg.get("border_width", default.border_width)
    w0 = float(data_cfg.get("weight_map_w0", default.w0))
    sigma = float(data_cfg.get("weight_map_sigma", default.sigma))
    if targets == "border" and (isinstance(width, bool) or not isinstance(width, int) or width < 1):
        raise ValueError(f"data.border_width must be a whole number of pixels >= 1, got {width!r}")
    if weight_map == "unet" and not (np.isfinite(w0) and w0 >= 0 and np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"data.weight_map_w0 must be >= 0 and data.weight_map_sigma > 0 (pixels), "
                         f"got {w0} and {sigma}")
    # Values the stored arrays do not depend on are kept at their defaults, so they never split copies.
    return TargetChoice(targets=targets, border_width=int(width) if targets == "border" else default.border_width,
                        weight_map=weight_map, w0=w0 if weight_map else default.w0,
                        sigma=sigma if weight_map else default.sigma, distance=distance)


def trained_label(example: Mapping[str, Any], *, choice: TargetChoice) -> np.ndarray:
    """The class map trained on, int32 [H, W] (`labels.STORED_IGNORE` = ignore).

    Args:
        example: label int [H, W] (the stored class map, `labels.STORED_IGNORE` = ignore) and instances int [H, W].
        choice: "semantic" returns the label; "border" the border classes, ignore where the label is.
    """
    label = np.asarray(example["label"], np.int32)
    if choice.targets == "semantic":
        return label
    border = target_maps.border_targets(example["instances"], width=choice.border_width)
    return np.where(label == labels.STORED_IGNORE, labels.STORED_IGNORE, border).astype(np.int32)


def _base_records(base: tfds.core.DatasetBuilder, split: str) -> Any:
    """Random-access base records with the image left PNG-encoded: it is copied, never decoded."""
    return base.as_data_source(split=split, decoders={"image": tfds.decode.SkipDecoding()})


def _label_and_instances(record: Mapping[str, Any]) -> dict[str, Any]:
    """label int32 [H, W], instances int32 [H, W] and id str of a stored base record."""
    return {"label": np.asarray(record["label"])[..., 0].astype(np.int32),
            "instances": np.asarray(record["instances"]).astype(np.int32), "id": tfds_format.as_text(record["id"])}


def derive_example(record: Mapping[str, Any], *, choice: TargetChoice,
                   class_weights: np.ndarray | None) -> tuple[str, dict[str, Any]]:
    """(id, stored example) of a base record: its image, label and instances plus the derived targets.

    Args:
        record: decoded stored base example (`tfds_format`), image as PNG bytes (`_base_records`).
        choice: which targets to add.
        class_weights: float [N] w_c of the weight map (N classes of the trained class map); None for none.
    """
    example = _label_and_instances(record)
    label = trained_label(example, choice=choice)
    weights = None
    if class_weights is not None:
        weights = target_maps.unet_weight_map(example["instances"], class_weights=class_weights, labels=label,
                                              w0=choice.w0, sigma=choice.sigma, ignore_index=labels.STORED_IGNORE)
    return example["id"], tfds_format.stored_example(
        image=record["image"], label=example["label"].astype(np.uint8), instances=record["instances"],
        example_id=example["id"], weights=weights,
        border_label=label.astype(np.uint8) if choice.targets == "border" else None,
        distance=target_maps.instance_distance(example["instances"]) if choice.distance else None)


def _trained_label_example(record: Mapping[str, Any], *, choice: TargetChoice) -> dict[str, Any]:
    """Stored base record -> {label: trained class map, id}: what the class statistics count."""
    example = _label_and_instances(record)
    return {"label": trained_label(example, choice=choice), "id": example["id"]}


class TargetsBuilder(tfds_format.StoredBuilder, skip_registration=True):
    """The derived dataset `<base name>_targets` of a prepared base dataset that has instance ids."""

    name = "seg_jax_targets"  # replaced per instance by `<base name>_targets`

    def __init__(self, *, base: tfds.core.DatasetBuilder, choice: TargetChoice, variant: str,
                 num_threads: int, **kwargs):
        self.name = f"{base.name}_targets"
        self._base = base
        self._choice = choice
        self._variant = variant
        self._num_threads = max(int(num_threads), 1)
        # The derived copy of each base version gets that version: <base>_targets/<config>/<base version>.
        super().__init__(config=tfds.core.BuilderConfig(name=choice.config_name(variant), version=str(base.version)),
                         **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        choice = self._choice
        return tfds_format.stored_info(
            self, class_names=self._base.info.metadata["class_names"], has_instances=True,
            has_weights=choice.weight_map is not None, has_border_label=choice.targets == "border",
            has_distance=choice.distance is not None,
            description=f"{self._base.name} with targets derived from its instance ids "
                        "(seg_jax.data.derived.stored_targets).",
            metadata={"base": f"{self._base.name}/{self._variant}", **dataclasses.asdict(choice),
                      **_base_fingerprint(self._base)})

    def _num_trained_classes(self) -> int:
        return self._choice.num_classes or len(self._base.info.metadata["class_names"])

    def _class_weights(self) -> np.ndarray:
        """w_c from the trained class map of the base `train` split (module docstring)."""
        if _STATISTICS_SPLIT not in self._base.info.splits:
            raise ValueError(f"dataset {self._base.name!r} has no {_STATISTICS_SPLIT!r} split to compute the "
                             "U-Net class weights from")
        source = tfds_format.CanonicalSource(_base_records(self._base, _STATISTICS_SPLIT),
                                             functools.partial(_trained_label_example, choice=self._choice))
        counts = statistics.count_labels(source, num_classes=self._num_trained_classes(),
                                            num_threads=self._num_threads)
        weights = statistics.class_weights_from_counts(counts, method=CLASS_WEIGHT_METHOD)
        self.info.metadata.update(class_weights=weights.tolist(), class_weight_method=CLASS_WEIGHT_METHOD,
                                  class_pixel_counts=counts.tolist(), class_pixel_counts_split=_STATISTICS_SPLIT)
        return weights

    def _split_generators(self, dl_manager):
        del dl_manager  # Everything comes from the prepared base dataset.
        class_weights = self._class_weights() if self._choice.weight_map == "unet" else None
        return {split: self._generate_examples(split=split, class_weights=class_weights)
                for split in self._base.info.splits}

    def _generate_examples(self, *, split: str, class_weights: np.ndarray | None):
        ds = grain.MapDataset.source(_base_records(self._base, split)).map(
            functools.partial(derive_example, choice=self._choice, class_weights=class_weights))
        threads = self._num_threads
        yield from ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=threads))


def _base_fingerprint(base: tfds.core.DatasetBuilder) -> dict[str, Any]:
    """{"base_sources_sha256": ...} for a base converted from a user's folder (its record's source
    fingerprint, `sources.folder_record`), else {} (built-in bases never change under the same name)."""
    conversion = base.info.metadata.get("conversion") or {}
    return {"base_sources_sha256": conversion["sources_sha256"]} if "sources_sha256" in conversion else {}


def load_builder(base: tfds.core.DatasetBuilder, *, choice: TargetChoice, variant: str, data_dir: str,
                 num_threads: int) -> tfds.core.DatasetBuilder:
    """The derived dataset of `base` for `choice`, written first if missing (idempotent).

    `base` must be prepared and have instance ids; `variant` is the base's `data.variant`.

    Raises:
        ValueError: the derived copy was made from another conversion of a folder dataset (its base was
            deleted and converted again by hand); the message names the copy to delete.
    """
    builder = TargetsBuilder(base=base, choice=choice, variant=variant, num_threads=num_threads,
                             data_dir=os.path.expanduser(data_dir), file_format="array_record")
    if not builder.is_prepared():
        tfds_format.build(builder)
        return builder
    made_from = builder.info.metadata.get("base_sources_sha256")
    current = _base_fingerprint(base).get("base_sources_sha256")
    if made_from and made_from != current:
        raise ValueError(f"the derived targets in {builder.data_dir} were made from another conversion of "
                         f"{base.data_dir} (sources {made_from[:12]}, now {str(current)[:12]}); delete that "
                         "directory to derive them again (`python -m seg_jax.data.folder ... --overwrite` does so)")
    return builder


def to_canonical(choice: TargetChoice) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """Stored derived example -> canonical example whose `label` is the trained class map (picklable)."""
    return functools.partial(tfds_format.stored_to_canonical,
                             label_key="border_label" if choice.targets == "border" else "label")
