"""Mask R-CNN on tiles: each tile's detections moved to image coordinates and merged across overlaps.

An object cut by a tile border is, when `predict.overlap` exceeds its size, seen whole by a neighbouring tile; the
cut part is contained in the whole one, so duplicates are found by the overlap of their masks as a fraction of the
smaller mask, and the detection not touching an inner tile border is kept (then the higher score).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Detection:
    """One detection in image coordinates.

    box: float `[4]` x1, y1, x2, y2 pixels; mask: bool `[h, w]` binary mask of the window whose top-left pixel is
    (top, left); cut: the mask touches a tile border inside the image; tile: index of the tile it came from.
    """

    box: np.ndarray
    score: float
    label: int
    top: int
    left: int
    mask: np.ndarray
    cut: bool
    tile: int

    @property
    def area(self) -> int:
        return int(self.mask.sum())


def tile_detections(outputs: dict[str, np.ndarray], *, corner: tuple[int, int], tile: int,
                    image_size: tuple[int, int]) -> list[Detection]:
    """The valid detections of one tile's outputs (`DetectionTask.predict` of one image: boxes `[K, 4]`, scores,
    classes, valid `[K]`, mask probabilities `[K, T, T]`), masks thresholded at 0.5 and cropped to the image,
    moved by `corner` = (top, left) pixels into the image of `image_size` = (height, width) pixels."""
    top, left = corner
    height, width = image_size
    tile_h, tile_w = outputs["masks"].shape[1:]
    inside_h, inside_w = min(tile_h, height - top), min(tile_w, width - left)
    # borders of this tile that lie inside the image: an object touching one continues in a neighbour
    inner = (top > 0, left > 0, top + tile_h < height, left + tile_w < width)
    found = []
    for k in np.flatnonzero(outputs["valid"]):
        mask = outputs["masks"][k, :inside_h, :inside_w] > 0.5
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        if not rows.size:
            continue
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        touches = (r0 == 0, c0 == 0, r1 == inside_h, c1 == inside_w)
        box = np.asarray(outputs["boxes"][k], np.float64) + np.array([left, top, left, top])
        box = np.clip(box, 0, [width, height, width, height])  # off the padding
        found.append(Detection(box=box, score=float(outputs["scores"][k]), label=int(outputs["classes"][k]),
                               top=top + int(r0), left=left + int(c0), mask=mask[r0:r1, c0:c1],
                               cut=any(t and i for t, i in zip(touches, inner)), tile=tile))
    return found


def intersection(a: Detection, b: Detection) -> int:
    """Pixels where the masks of `a` and `b` overlap."""
    top, left = max(a.top, b.top), max(a.left, b.left)
    bottom = min(a.top + a.mask.shape[0], b.top + b.mask.shape[0])
    right = min(a.left + a.mask.shape[1], b.left + b.mask.shape[1])
    if bottom <= top or right <= left:
        return 0
    wa = a.mask[top - a.top:bottom - a.top, left - a.left:right - a.left]
    wb = b.mask[top - b.top:bottom - b.top, left - b.left:right - b.left]
    return int(np.count_nonzero(wa & wb))


def merge(detections: Sequence[Detection], *, min_overlap: float) -> list[Detection]:
    """Greedy suppression across tiles: candidates in the order (not cut first, then by decreasing score); one is
    dropped when it comes from another tile than a kept detection whose mask covers more than `min_overlap` of
    the smaller of the two masks. Detections of the same tile never suppress each other (the model's own NMS
    already chose among them). Returns the kept ones by decreasing score."""
    order = sorted(detections, key=lambda d: (d.cut, -d.score))
    kept: list[Detection] = []
    for candidate in order:
        duplicate = any(
            other.tile != candidate.tile
            and intersection(other, candidate) > min_overlap * min(other.area, candidate.area)
            for other in kept)
        if not duplicate:
            kept.append(candidate)
    return sorted(kept, key=lambda d: -d.score)


def instance_map(detections: Sequence[Detection], *, image_size: tuple[int, int]) -> np.ndarray:
    """int32 `[H, W]` instance ids: detection i (by decreasing score) is id i + 1; where masks overlap, the higher
    score wins."""
    ids = np.zeros(image_size, np.int32)
    for i in reversed(range(len(detections))):  # lowest score first, so higher scores paint over it
        d = detections[i]
        window = ids[d.top:d.top + d.mask.shape[0], d.left:d.left + d.mask.shape[1]]
        window[d.mask] = i + 1
    return ids


def full_mask(detection: Detection, *, image_size: tuple[int, int]) -> np.ndarray:
    """bool `[H, W]` mask of `detection` in the whole image."""
    out = np.zeros(image_size, bool)
    out[detection.top:detection.top + detection.mask.shape[0],
        detection.left:detection.left + detection.mask.shape[1]] = detection.mask
    return out
