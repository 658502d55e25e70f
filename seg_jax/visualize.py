"""Pictures of predictions: colour-coded label maps side by side with their images, under column titles and
above a legend of the class colours (`figure`)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from seg_jax.labels import IGNORE_INDEX

IGNORE_COLOUR = (255, 255, 255)  # how `colorize` draws the ignore label


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
    """Tiles uint8 `[H, W, 3]` panels, one list per row, with white gaps; a panel smaller than the largest sits
    top-left in its cell on white (native-resolution pictures of images of different sizes)."""
    h = max(panel.shape[0] for row in rows for panel in row)
    w = max(panel.shape[1] for row in rows for panel in row)
    ncols = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + gap) - gap, ncols * (w + gap) - gap, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, panel in enumerate(row):
            ph, pw = panel.shape[:2]
            out[i * (h + gap):i * (h + gap) + ph, j * (w + gap):j * (w + gap) + pw] = panel
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


def class_legend(class_names: Sequence[str], *, ignore: bool = True) -> list[tuple[str, tuple[int, int, int]]]:
    """`(name, colour)` of every class as `colorize` draws it (`palette`), and the ignore label's white."""
    colours = palette(max(len(class_names), 1))
    entries = [(str(name), tuple(int(v) for v in colours[i])) for i, name in enumerate(class_names)]
    return entries + ([("ignore", IGNORE_COLOUR)] if ignore else [])


def _wrap(text: str, width: int, draw: ImageDraw.ImageDraw, font) -> list[str]:
    """Words of `text` in lines at most `width` px wide (a word wider than that is cut)."""
    fits = lambda t: draw.textlength(t, font=font) <= width
    lines: list[str] = []
    for word in text.split():
        pieces = []
        while len(word) > 1 and not fits(word):
            cut = max([n for n in range(1, len(word)) if fits(word[:n])] or [1])
            pieces.append(word[:cut])
            word = word[cut:]
        for piece in pieces + [word]:
            if lines and fits(f"{lines[-1]} {piece}"):
                lines[-1] = f"{lines[-1]} {piece}"
            else:
                lines.append(piece)
    return lines or [""]


def figure(rows: list[list[np.ndarray]], *, titles: Sequence[str],
           legend: Sequence[tuple[str, tuple[int, int, int]]] = (), gap: int = 2) -> np.ndarray:
    """`grid(rows)` with a title above each column (wrapped to the panel width) and, below, a legend: a swatch of
    each `(name, colour)` beside its name. uint8 `[H, W, 3]`, black text on white."""
    body = grid(rows, gap=gap)
    panel_w = max(panel.shape[1] for row in rows for panel in row)
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line = font.getbbox("Ag")[3] + 2
    wrapped = [_wrap(t, panel_w, probe, font) for t in titles]
    header = max(len(w) for w in wrapped) * line + gap if titles else 0
    swatch, width = line - 3, body.shape[1]
    places, x, y = [], 0, 0  # legend entries flow left to right, wrapping at the picture's width
    for name, colour in legend:
        entry = swatch + 3 + int(np.ceil(probe.textlength(name, font=font))) + 8
        if x and x + entry > width:
            x, y = 0, y + line
        places.append((x, y, name, colour))
        x += entry
    footer = y + line + gap if legend else 0
    canvas = Image.new("RGB", (width, header + body.shape[0] + footer), (255, 255, 255))
    canvas.paste(Image.fromarray(body), (0, header))
    draw = ImageDraw.Draw(canvas)
    for j, lines in enumerate(wrapped):
        for k, text in enumerate(lines):
            left = j * (panel_w + gap) + max((panel_w - probe.textlength(text, font=font)) / 2, 0)
            draw.text((left, k * line), text, fill=(0, 0, 0), font=font)
    top = header + body.shape[0] + gap
    for x, y, name, colour in places:
        draw.rectangle((x, top + y + 1, x + swatch, top + y + 1 + swatch), fill=colour, outline=(128, 128, 128))
        draw.text((x + swatch + 3, top + y), name, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)
