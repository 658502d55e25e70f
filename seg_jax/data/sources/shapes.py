"""`shapes`: procedural RGB scenes of discs, squares, triangles, rings and thin bars.

Built to be imbalanced and to need shape rather than colour: object colours are drawn from one
distribution whatever the class, so only shape tells the classes apart; the background is textured,
has irregular low-contrast blobs, and everything is blurred and noisy. Class frequencies differ by orders of magnitude
(background ~80 % of pixels, thin bars ~0.3 %), objects overlap and touch, later ones on top.
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from seg_jax.data.sources import procedural

CLASS_NAMES = ("background", "disc", "square", "triangle", "ring", "bar")

# Per-object class probabilities (disc, square, triangle, ring, bar): rare classes are also small.
_OBJECT_PROBS = np.array([0.38, 0.26, 0.20, 0.10, 0.06])
_MIN_OBJECTS, _MAX_OBJECTS = 4, 10
# Objects and background differ by at least this mean colour distance (0..255 units); clutter
# blobs by at most `_MAX_CLUTTER_CONTRAST` per channel.
_MIN_CONTRAST = 60.0
_MAX_CLUTTER_CONTRAST = 35.0


def _rotated(yy: np.ndarray, xx: np.ndarray, *, cy: float, cx: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (u, v) relative to (cy, cx), rotated by `angle` radians."""
    dy, dx = yy - cy, xx - cx
    cos, sin = np.cos(angle), np.sin(angle)
    return dx * cos + dy * sin, -dx * sin + dy * cos


def _object_mask(kind: int, yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Boolean [S, S] mask of one object of class `kind` (1..5) at a random place, size and angle."""
    cy, cx = rng.uniform(0, size, 2)
    u, v = _rotated(yy, xx, cy=cy, cx=cx, angle=rng.uniform(0, 2 * np.pi))
    if kind == 1:  # disc
        radius = size * rng.uniform(0.07, 0.16)
        return u**2 + v**2 <= radius**2
    if kind == 2:  # square
        half = size * rng.uniform(0.06, 0.13)
        return np.maximum(np.abs(u), np.abs(v)) <= half
    if kind == 3:  # equilateral triangle: inside all three edges, each at inradius R/2 from the centre
        circumradius = size * rng.uniform(0.09, 0.17)
        normals = np.pi / 2 + 2 * np.pi * np.arange(3) / 3
        return np.all([u * np.cos(a) + v * np.sin(a) <= circumradius / 2 for a in normals], axis=0)
    if kind == 4:  # ring
        outer = size * rng.uniform(0.08, 0.15)
        inner = outer * rng.uniform(0.5, 0.7)
        return (u**2 + v**2 <= outer**2) & (u**2 + v**2 >= inner**2)
    # thin bar
    half_length = size * rng.uniform(0.12, 0.25)
    half_width = max(0.6, size * rng.uniform(0.008, 0.015))
    return (np.abs(u) <= half_length) & (np.abs(v) <= half_width)


def _colour_away_from(rng: np.random.Generator, reference: np.ndarray) -> np.ndarray:
    """A random RGB colour (0..255) at least `_MIN_CONTRAST` from `reference` on average."""
    while True:
        colour = rng.uniform(0, 255, 3)
        if np.abs(colour - reference).mean() >= _MIN_CONTRAST:
            return colour


def render_shapes(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scene of `size` x `size` pixels.

    Returns:
        image uint8 [S, S, 3], label uint8 [S, S] in 0..5 (`CLASS_NAMES`), instances uint16 [S, S]
        numbered 1..K (0 = background).
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = rng.uniform(30, 225, 3).astype(np.float32)
    image = base + 30 * procedural.smooth_noise(rng, (size, size, 3), sigma=size / 8)
    for _ in range(rng.integers(0, 4)):  # background clutter: irregular blobs, less contrast than objects
        blob = procedural.smooth_noise(rng, (size, size), sigma=size / 12) > rng.uniform(1.2, 2.0)
        offset = rng.uniform(-_MAX_CLUTTER_CONTRAST, _MAX_CLUTTER_CONTRAST, 3)
        image[blob] = base + offset + 10 * rng.standard_normal((int(blob.sum()), 3))
    label = np.zeros((size, size), np.uint8)
    instances = np.zeros((size, size), np.int32)
    # One texture field for all objects of the scene, scaled per object (cheaper than one each).
    texture = procedural.smooth_noise(rng, (size, size), sigma=rng.uniform(1.0, 3.0))[..., None]  # luminance
    kinds = 1 + rng.choice(len(_OBJECT_PROBS), size=rng.integers(_MIN_OBJECTS, _MAX_OBJECTS + 1), p=_OBJECT_PROBS)
    for number, kind in enumerate(kinds, start=1):
        mask = _object_mask(int(kind), yy, xx, rng, size)
        image[mask] = _colour_away_from(rng, base) + rng.uniform(-25, 25) * texture[mask]
        label[mask] = kind
        instances[mask] = number
    image = procedural.blur_and_noise(image, rng, blur_sigma=rng.uniform(0.4, 1.0), noise_sigma=rng.uniform(3, 12))
    return image, label, procedural.relabel_consecutive(instances)


class ShapesBuilder(procedural.ProceduralBuilder, skip_registration=True):
    """TFDS builder `seg_jax_shapes`; variants in `procedural.VARIANTS`."""

    name = "seg_jax_shapes"
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.1.0": "Clutter blobs in background colours (were object colours, too hard to learn on a CPU).",
                     "1.0.0": "First version."}
    CLASS_NAMES = CLASS_NAMES
    DESCRIPTION = __doc__
    render = staticmethod(render_shapes)
