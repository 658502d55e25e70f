"""Real public TFDS datasets mapped to the canonical example: `oxford_iiit_pet` and `cityscapes`.

Both are prepared by TFDS itself as array_record files and read without TensorFlow. The mapping
functions are pure and take one decoded TFDS example in that dataset's feature layout:
    oxford_iiit_pet: image uint8 [H, W, 3], segmentation_mask uint8 [H, W, 1] (1 pet, 2 background,
        3 border), file_name.
    cityscapes/semantic_segmentation: image_left uint8 [1024, 2048, 3], segmentation_label uint8
        [1024, 2048, 1] (Cityscapes label ids), image_id.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any, Mapping

import numpy as np
import tensorflow_datasets as tfds

from seg_jax.data.sources import tfds_format
from seg_jax.labels import STORED_IGNORE

PET_CLASS_NAMES = ("background", "pet")
# Trimap value -> class: 1 pet, 2 background, 3 border (ambiguous, so ignored); anything else ignored.
PET_TRIMAP_TO_CLASS = np.full(256, STORED_IGNORE, np.uint8)
PET_TRIMAP_TO_CLASS[[1, 2]] = [1, 0]

CITYSCAPES_CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
# Cityscapes label id -> train id (the 19 evaluated classes, in the order above); others ignored.
CITYSCAPES_LABEL_TO_TRAIN_ID = np.full(256, STORED_IGNORE, np.uint8)
CITYSCAPES_LABEL_TO_TRAIN_ID[[7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]] = np.arange(19)
CITYSCAPES_MANUAL_FILES = ("leftImg8bit_trainvaltest.zip", "gtFine_trainvaltest.zip")

TFDS_NAMES = {"oxford_iiit_pet": "oxford_iiit_pet", "cityscapes": "cityscapes/semantic_segmentation"}


def pet_to_canonical(example: Mapping[str, Any]) -> dict[str, Any]:
    """Canonical example of an `oxford_iiit_pet` example: label 0 background, 1 pet, `STORED_IGNORE` border."""
    trimap = np.asarray(example["segmentation_mask"])[..., 0]
    return {"image": np.asarray(example["image"], dtype=np.uint8),
            "label": PET_TRIMAP_TO_CLASS[trimap].astype(np.int32),
            "id": tfds_format.as_text(example.get("file_name", ""))}


def cityscapes_to_canonical(example: Mapping[str, Any]) -> dict[str, Any]:
    """Canonical example of a `cityscapes/semantic_segmentation` example: 19 train ids, `STORED_IGNORE` others."""
    label_ids = np.asarray(example["segmentation_label"])[..., 0]
    return {"image": np.asarray(example["image_left"], dtype=np.uint8),
            "label": CITYSCAPES_LABEL_TO_TRAIN_ID[label_ids].astype(np.int32),
            "id": tfds_format.as_text(example.get("image_id", ""))}


def load_builder(name: str, *, data_dir: str, manual_dir: str | None = None) -> tfds.core.DatasetBuilder:
    """The prepared TFDS builder of public dataset `name` (a key of `TFDS_NAMES`).

    Prepares it (array_record) when its files are missing: `oxford_iiit_pet` downloads itself;
    `cityscapes` needs `manual_dir` holding `CITYSCAPES_MANUAL_FILES` from cityscapes-dataset.com.
    Raises a RuntimeError saying what is missing instead of a deep TFDS traceback.
    """
    tfds_name = TFDS_NAMES[name]
    builder = tfds.builder(tfds_name, data_dir=os.path.expanduser(data_dir), file_format="array_record")
    if builder.is_prepared():
        return builder
    download_config = tfds.download.DownloadConfig(compute_stats=tfds.download.ComputeStatsMode.SKIP)
    if name == "cityscapes":
        missing = [f for f in CITYSCAPES_MANUAL_FILES
                   if not manual_dir or not os.path.isfile(os.path.join(os.path.expanduser(manual_dir), f))]
        if missing:
            raise RuntimeError(f"cityscapes is not prepared in {builder.data_dir!r} and data.cityscapes_manual_dir="
                               f"{manual_dir!r} lacks {', '.join(missing)}; download them (registration needed) "
                               "from https://www.cityscapes-dataset.com/downloads/")
        download_config = tfds.download.DownloadConfig(
            manual_dir=os.path.expanduser(manual_dir), compute_stats=tfds.download.ComputeStatsMode.SKIP)
    if importlib.util.find_spec("importlib_resources") is None:
        raise RuntimeError(f"preparing TFDS dataset {tfds_name!r} needs the package importlib_resources "
                           "(`pip install importlib_resources`)")
    try:
        builder.download_and_prepare(download_config=download_config)
    except Exception as error:  # Network, disk or archive problems: say which dataset and where.
        raise RuntimeError(f"could not prepare TFDS dataset {tfds_name!r} in {builder.data_dir!r}: {error}") from error
    return builder
