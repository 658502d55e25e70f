"""Pictures of predictions, drawn with scikit-image: class colours from `label2rgb`'s colour cycle (`palette`),
label maps in those colours (`colorize`, `colorize_instances`), predictions blended on their images with the
class boundaries marked (`overlay`: `label2rgb` + `mark_boundaries`), boxes (`draw_boxes`), and panels side by side
under column titles above a legend of the class colours by name (`figure`)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from skimage import color, draw, segmentation

from seg_jax.labels import IGNORE_INDEX

IGNORE_COLOUR = (255, 255, 255)  # how `colorize` draws the ignore label
BOUNDARY_COLOUR = (255, 255, 255)  # how `overlay` and `colorize_instances` mark region edges
CYCLE_DIMMING = 0.6  # each later pass through label2rgb's colour cycle is this much darker, so classes stay apart


def _to_uint8(picture: np.ndarray) -> np.ndarray:
    """float [..., 3] in [0, 1] (scikit-image's pictures) → uint8, rounded."""
    return np.rint(np.clip(picture, 0, 1) * 255).astype(np.uint8)


def palette(num_colors: int) -> np.ndarray:
    """`[num_colors, 3]` uint8 class colours: class 0 (background) black, class k >= 1 the colour `label2rgb` gives
    its k-th foreground label (red, blue, yellow, magenta, green, ...); past the cycle's end each further pass is
    `CYCLE_DIMMING` times darker, so no two classes share a colour."""
    foreground = np.arange(1, max(num_colors, 1))
    if not len(foreground):
        return np.zeros((max(num_colors, 0), 3), np.uint8)
    cycle = color.label2rgb(foreground[None], bg_label=0)[0]  # float [N - 1, 3] in [0, 1]
    passes = np.array([(cycle[:k] == cycle[k]).all(-1).sum() for k in range(len(cycle))])  # earlier same colours
    colours = cycle * CYCLE_DIMMING ** passes[:, None]
    return np.concatenate([np.zeros((1, 3), np.uint8), _to_uint8(colours)])


def colorize(labels: np.ndarray, *, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """int `[H, W]` label map → uint8 `[H, W, 3]` in the class colours (`palette`); the ignore label (and any
    value outside [0, N)) is drawn white."""
    colours = palette(max(num_classes, 1))
    out = colours[np.clip(labels, 0, num_classes - 1)]
    out[(labels == ignore_index) | (labels < 0) | (labels >= num_classes)] = IGNORE_COLOUR
    return out


def overlay(image: np.ndarray, labels: np.ndarray, *, num_classes: int, alpha: float,
            boundaries: bool = True) -> np.ndarray:
    """uint8 `[H, W, 3]`: the class colour `c` of each pixel (`palette`) blended on uint8 `image` `[H, W, 3]` at
    opacity `alpha`, round(alpha·c + (1 − alpha)·image) (`label2rgb`, the image kept in colour), except on
    background (class 0), the ignore label and values outside [0, N), where the image is left as it is. With
    `boundaries`, every pixel of a non-background region that has a 4-neighbour of another label is drawn in
    `BOUNDARY_COLOUR` (`mark_boundaries`, mode "inner": the line lies inside the region)."""
    labels = np.asarray(labels)
    coloured = np.where((labels > 0) & (labels < num_classes), labels, 0)
    present = np.unique(coloured[coloured > 0])
    # label2rgb colours labels by their rank among those present: hand it exactly their colours, in that order
    colours = [tuple(c) for c in palette(num_classes)[present] / 255]
    out = color.label2rgb(coloured, image=image, colors=colours, alpha=alpha, bg_label=0, bg_color=None, saturation=1,
                          kind="overlay") if len(present) else image / 255
    if boundaries and len(present):
        out = segmentation.mark_boundaries(out, coloured, color=np.divide(BOUNDARY_COLOUR, 255), mode="inner",
                                           background_label=0)
    return _to_uint8(out)


def colorize_instances(instances: np.ndarray) -> np.ndarray:
    """int `[H, W]` instance ids (0 = background, black) → uint8 `[H, W, 3]`: instances in `label2rgb`'s colour
    cycle by id, each instance's edge marked in `BOUNDARY_COLOUR` (mode "inner"), so that touching instances stay
    apart where the cycle repeats a colour."""
    ids = np.asarray(instances)
    if not ids.any():
        return np.zeros((*ids.shape, 3), np.uint8)
    coloured = color.label2rgb(ids, bg_label=0, bg_color=(0, 0, 0))
    marked = segmentation.mark_boundaries(coloured, ids, color=np.divide(BOUNDARY_COLOUR, 255), mode="inner",
                                          background_label=0)
    return _to_uint8(marked)


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
    """Copy of uint8 `[H, W, 3]` `panel` with 1-px outlines of `boxes` `[K, 4]` (x1, y1, x2, y2 pixels; the outline
    runs along the pixels floor(x1) .. ceil(x2) − 1, clipped to the panel) in the colour of each box's class
    (`palette`, so a box matches its class's colour in the label pictures)."""
    out = panel.copy()
    h, w = out.shape[:2]
    colours = palette(max(num_classes, 1))
    for (x1, y1, x2, y2), c in zip(np.asarray(boxes), np.asarray(classes)):
        x1, x2 = int(np.clip(np.floor(x1), 0, w - 1)), int(np.clip(np.ceil(x2) - 1, 0, w - 1))
        y1, y2 = int(np.clip(np.floor(y1), 0, h - 1)), int(np.clip(np.ceil(y2) - 1, 0, h - 1))
        rows, cols = draw.polygon_perimeter([y1, y1, y2, y2], [x1, x2, x2, x1], shape=(h, w))
        out[rows, cols] = colours[int(c) % len(colours)]
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
