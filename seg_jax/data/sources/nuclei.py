"""`nuclei`: procedural fluorescence-like images of blob-shaped nuclei (the DSB-2018 situation).

Nuclei are lumpy ellipses of varying brightness, most of them in clusters where they touch: a
pixel covered by several nuclei goes to the one whose boundary it is deepest inside, so touching
nuclei share a boundary with no background between them. Blur, uneven background and
signal-dependent noise follow, so thresholding plus connected components merges touching nuclei
and instance separation has to be learned (e.g. from boundary weights or a third class).
"""
from __future__ import annotations

import numpy as np

from seg_jax.data.sources import procedural

CLASS_NAMES = ("background", "nucleus")

_TOUCH_PROBABILITY = 0.7  # chance that a new nucleus is placed against an existing one
_PLACEMENT_TRIES = 20


def _place_centres(rng: np.random.Generator, radii: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres float [K', 2] (y, x) and their radii [K'] for up to K nuclei of radii `radii` [K] pixels.

    Most nuclei are placed at 0.8-1.0 times the sum of radii from a random earlier one (they touch
    or overlap slightly); a candidate closer than 0.6 times that to any nucleus is retried.
    """
    centres: list[np.ndarray] = []
    kept: list[float] = []
    for radius in radii:
        for _ in range(_PLACEMENT_TRIES):
            if centres and rng.random() < _TOUCH_PROBABILITY:
                anchor = rng.integers(len(centres))
                angle = rng.uniform(0, 2 * np.pi)
                distance = (kept[anchor] + radius) * rng.uniform(0.8, 1.0)
                candidate = centres[anchor] + distance * np.array([np.sin(angle), np.cos(angle)])
            else:
                candidate = rng.uniform(0, size, 2)
            gaps = [np.hypot(*(candidate - c)) / (r + radius) for c, r in zip(centres, kept)]
            if (0 <= candidate).all() and (candidate < size).all() and min(gaps, default=1.0) >= 0.6:
                centres.append(candidate)
                kept.append(float(radius))
                break
    return np.array(centres).reshape(-1, 2), np.array(kept)


def _normalised_radius(yy: np.ndarray, xx: np.ndarray, *, centre: np.ndarray, radius: float,
                       rng: np.random.Generator) -> np.ndarray:
    """float [h, w] on the grid (yy, xx): distance from `centre` relative to a lumpy elliptical
    boundary of mean radius `radius` pixels (< 1 inside)."""
    dy, dx = yy - centre[0], xx - centre[1]
    angle = rng.uniform(0, np.pi)
    aspect = rng.uniform(1.0, 1.6)
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / np.sqrt(aspect)
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) * np.sqrt(aspect)
    distance = np.hypot(u, v)
    direction = (u + 1j * v) / np.maximum(distance, 1e-6)  # e^{i theta}; powers give cos(k theta)
    wobble = 1 + sum(rng.uniform(0, 0.08) * (direction**k * np.exp(1j * rng.uniform(0, 2 * np.pi))).real
                     for k in (2, 3, 5))
    return distance / (radius * wobble)


def _depth_maps(centres: np.ndarray, radii: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """float [K, S, S] normalised radius of each nucleus, computed in a box around it (inf elsewhere)."""
    depth = np.full((len(radii), size, size), np.inf, np.float32)
    for k, (centre, radius) in enumerate(zip(centres, radii)):
        reach = radius * 1.6  # beyond any wobbly ellipse of this mean radius
        y0, x0 = np.maximum(np.floor(centre - reach).astype(int), 0)
        y1, x1 = np.minimum(np.ceil(centre + reach).astype(int) + 1, size)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        depth[k, y0:y1, x0:x1] = _normalised_radius(yy, xx, centre=centre, radius=radius, rng=rng)
    return depth


def render_nuclei(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One fluorescence-like image of `size` x `size` pixels.

    Returns:
        image uint8 [S, S, 3] (grey, slightly tinted), label uint8 [S, S] (1 = nucleus),
        instances uint16 [S, S] numbered 1..K (0 = background).
    """
    count = rng.integers(6, 19)
    centres, radii = _place_centres(rng, size * rng.uniform(0.045, 0.08, count), size)
    depth = _depth_maps(centres, radii, rng, size)
    nearest = depth.argmin(axis=0)
    rho = depth.min(axis=0)
    inside = rho < 1
    instances = np.where(inside, nearest + 1, 0)
    brightness = rng.uniform(0.25, 1.0, len(radii))[nearest]
    # Brighter centre, textured chromatin, dim edge; background has a smooth glow.
    texture = 1 + 0.15 * procedural.smooth_noise(rng, (size, size), sigma=1.5)
    signal = np.where(inside, brightness * (0.7 + 0.3 * (1 - rho**2)) * texture, 0.0)
    glow = rng.uniform(0.02, 0.12) * (1 + 0.5 * procedural.smooth_noise(rng, (size, size), sigma=size / 4))
    intensity = 200 * (signal + np.clip(glow, 0, None))
    # Signal-dependent (shot-like) noise on top of the additive noise in blur_and_noise.
    intensity = intensity + np.sqrt(intensity) * rng.uniform(0.5, 1.5) * rng.standard_normal(intensity.shape)
    tint = rng.uniform(0.75, 1.0, 3)
    image = procedural.blur_and_noise(intensity[..., None] * tint, rng, blur_sigma=rng.uniform(0.7, 1.5),
                                      noise_sigma=rng.uniform(2, 6))
    return image, inside.astype(np.uint8), procedural.relabel_consecutive(instances)


class NucleiBuilder(procedural.ProceduralBuilder, skip_registration=True):
    """TFDS builder `seg_jax_nuclei`; variants in `procedural.VARIANTS`."""

    name = "seg_jax_nuclei"
    CLASS_NAMES = CLASS_NAMES
    DESCRIPTION = __doc__
    render = staticmethod(render_nuclei)
