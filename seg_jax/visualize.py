"""Pictures of predictions: colour-coded label maps side by side with their images."""
from __future__ import annotations

import numpy as np
from seg_jax.labels import IGNORE_INDEX


def palette(num_colors: int, *, seed: int = 0) -> np.ndarray:
    """`[num_colors, 3]` uint8 colours; class 0 (background) black, the first classes distinct."""
    base = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                     [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
                     [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0],
                     [170, 255, 195], [128, 128, 0], [255, 215, 180], [0, 0, 128]], np.uint8)
    if num_colors <= len(base):
        return base[:num_colors]
    extra = np.random.default_rng(seed).integers(40, 256, size=(num_colors - len(base), 3), dtype=np.uint8)
    return np.concatenate([base, extra])


def colorize(labels: np.ndarray, *, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """int `[H, W]` label map → uint8 `[H, W, 3]`; the ignore label is drawn white."""
    colours = palette(max(num_classes, 1))
    out = colours[np.clip(labels, 0, num_classes - 1)]
    out[(labels == ignore_index) | (labels < 0) | (labels >= num_classes)] = 255
    return out


def colorize_instances(instances: np.ndarray) -> np.ndarray:
    """int `[H, W]` instance ids (0 = background) → uint8 `[H, W, 3]`, each instance its own colour."""
    ids = np.asarray(instances)
    colours = palette(int(ids.max()) + 1 if ids.size else 1, seed=1)
    colours[1:] = np.random.default_rng(7).permutation(colours[1:])  # neighbours' ids rarely share a hue
    return colours[ids]


def grid(rows: list[list[np.ndarray]], *, gap: int = 2) -> np.ndarray:
    """Tiles equally sized uint8 `[H, W, 3]` panels, one list per row, with white gaps."""
    h, w = rows[0][0].shape[:2]
    ncols = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + gap) - gap, ncols * (w + gap) - gap, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, panel in enumerate(row):
            out[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = panel[:h, :w]
    return out


def draw_boxes(panel: np.ndarray, boxes: np.ndarray, classes: np.ndarray, *, num_classes: int) -> np.ndarray:
    """Copy of uint8 `[H, W, 3]` `panel` with 1-px outlines of `boxes` `[K, 4]` (x1, y1, x2, y2 pixels) in the
    colour of each box's class (`palette`, so a box matches its class's colour in the label pictures)."""
    out = panel.copy()
    h, w = out.shape[:2]
    colours = palette(max(num_classes, 1))
    for (x1, y1, x2, y2), c in zip(np.asarray(boxes), np.asarray(classes)):
        x1, x2 = int(np.clip(np.floor(x1), 0, w - 1)), int(np.clip(np.ceil(x2) - 1, 0, w - 1))
        y1, y2 = int(np.clip(np.floor(y1), 0, h - 1)), int(np.clip(np.ceil(y2) - 1, 0, h - 1))
        colour = colours[int(c) % len(colours)]
        out[y1, x1:x2 + 1] = out[y2, x1:x2 + 1] = colour
        out[y1:y2 + 1, x1] = out[y1:y2 + 1, x2] = colour
    return out
