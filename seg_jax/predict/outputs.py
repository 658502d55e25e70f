"""What predict writes per image, and the folder's COCO-style JSON of instances.

Per input `<stem>.*`, in the output folder:
    <stem>_labels.png         class ids as a palette PNG: each index drawn in its class colour
                              (`seg_jax.visualize.palette`), the class names in its `class_names` text chunk (JSON)
    <stem>_overlay.png        the class colours blended on the image, background untinted (for viewing;
                              `seg_jax.visualize.overlay` without boundary lines)
    <stem>_probabilities.npz  `predict.save_probabilities`: float32 `probabilities` [H, W, N], `class_names`
    <stem>_instances.png      instance configs: 16-bit instance ids, 0 = background, 1..K by decreasing score
and, for instance configs, `instances.json` (COCO results with images and categories: the masks of the
instance PNGs as RLE, boxes, scores).
"""
from __future__ import annotations

import json
import pathlib
from typing import Sequence

import numpy as np
from PIL import Image, PngImagePlugin
from pycocotools import mask as mask_utils
from scipy import ndimage

from seg_jax import visualize

INSTANCES_JSON = "instances.json"
MAX_INSTANCES = np.iinfo(np.uint16).max


def image_outputs(stem: str, *, probabilities: bool, instances: bool) -> list[str]:
    """File names written for the image `stem`, in the order above."""
    names = [f"{stem}_labels.png", f"{stem}_overlay.png"]
    names += [f"{stem}_probabilities.npz"] if probabilities else []
    names += [f"{stem}_instances.png"] if instances else []
    return names


def write_labels(path: pathlib.Path, labels: np.ndarray, *, class_names: Sequence[str]) -> None:
    """int `[H, W]` class ids in [0, N) as an 8-bit palette PNG in the class colours, naming the classes."""
    if len(class_names) > 256:
        raise ValueError(f"{len(class_names)} classes do not fit an 8-bit palette PNG")
    picture = Image.fromarray(np.asarray(labels, np.uint8))  # mode L; putpalette makes it P
    colours = np.zeros((256, 3), np.uint8)
    colours[:len(class_names)] = visualize.palette(len(class_names))
    picture.putpalette(colours.ravel().tolist())
    info = PngImagePlugin.PngInfo()
    info.add_text("class_names", json.dumps(list(class_names)))
    picture.save(path, pnginfo=info)


def write_instances(path: pathlib.Path, instances: np.ndarray) -> None:
    """int `[H, W]` instance ids as a 16-bit PNG."""
    if instances.max(initial=0) > MAX_INSTANCES:
        raise ValueError(f"{int(instances.max())} instances do not fit a 16-bit PNG")
    Image.fromarray(np.asarray(instances, np.uint16)).save(path)


def coco_annotations(instances: np.ndarray, *, scores: np.ndarray, classes: np.ndarray,
                     image_id: int) -> list[dict]:
    """COCO results of one image: for id k of int `[H, W]` `instances` (1..K), its RLE mask (pycocotools), area
    (pixels), bbox `[x, y, width, height]` pixels, `scores[k - 1]` and category `classes[k - 1]`."""
    annotations = []
    for k, window in enumerate(ndimage.find_objects(instances), start=1):
        if window is None:
            continue
        mask = np.zeros(instances.shape, np.uint8, order="F")
        mask[window] = instances[window] == k
        rle = mask_utils.encode(mask)
        rle["counts"] = rle["counts"].decode("ascii")
        rows, cols = window
        annotations.append({
            "image_id": image_id, "category_id": int(classes[k - 1]), "segmentation": rle,
            "area": int(mask_utils.area(rle)), "score": float(scores[k - 1]),
            "bbox": [cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start]})
    return annotations


def coco_document(images: list[dict], annotations: list[dict], *, categories: Sequence[tuple[int, str]]) -> dict:
    """The COCO-style JSON: `images` (id, file_name, height, width), `annotations` numbered from 1, `categories`."""
    numbered = [{"id": i, **a} for i, a in enumerate(annotations, start=1)]
    return {"images": images, "annotations": numbered,
            "categories": [{"id": int(c), "name": str(name)} for c, name in categories]}
