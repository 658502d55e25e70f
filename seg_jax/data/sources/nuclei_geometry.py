"""Where the `nuclei` generators put their nuclei and which nucleus owns each pixel (both versions).

Nuclei are lumpy ellipses placed mostly against an earlier one (clusters). A pixel covered by several
goes to the nucleus whose boundary it is deepest inside (the smallest normalised radius), so touching
nuclei share a boundary with no background between them. The defaults are version 1.0.0's.
"""
from __future__ import annotations

import numpy as np

TOUCH_PROBABILITY = 0.7  # chance that a new nucleus is placed against an existing one
PLACEMENT_TRIES = 20
HARMONICS = ((2, 0.08), (3, 0.08), (5, 0.08))  # (k, largest amplitude) of the boundary's radial wobble


def place_centres(rng: np.random.Generator, radii: np.ndarray, size: int, *,
                  touch_probability: float = TOUCH_PROBABILITY, touch_distance: tuple[float, float] = (0.8, 1.0),
                  min_gap: float = 0.6, tries: int = PLACEMENT_TRIES) -> tuple[np.ndarray, np.ndarray]:
    """Centres float [K', 2] (y, x) and their radii [K'] for up to K nuclei of radii `radii` [K] pixels.

    With probability `touch_probability` a nucleus is placed at `touch_distance` (uniform range) times the sum of
    radii from a random earlier one (they touch or overlap), else anywhere in the `size` x `size` image; a
    candidate closer than `min_gap` times that sum to any nucleus is retried up to `tries` times, then dropped.
    """
    centres: list[np.ndarray] = []
    kept: list[float] = []
    for radius in radii:
        for _ in range(tries):
            if centres and rng.random() < touch_probability:
                anchor = rng.integers(len(centres))
                angle = rng.uniform(0, 2 * np.pi)
                distance = (kept[anchor] + radius) * rng.uniform(*touch_distance)
                candidate = centres[anchor] + distance * np.array([np.sin(angle), np.cos(angle)])
            else:
                candidate = rng.uniform(0, size, 2)
            if not ((0 <= candidate).all() and (candidate < size).all()):
                continue
            offsets = candidate - np.array(centres).reshape(-1, 2)
            gaps = np.hypot(offsets[:, 0], offsets[:, 1]) / (np.array(kept) + radius)
            if not len(gaps) or gaps.min() >= min_gap:
                centres.append(candidate)
                kept.append(float(radius))
                break
    return np.array(centres).reshape(-1, 2), np.array(kept)


def normalised_radius(yy: np.ndarray, xx: np.ndarray, *, centre: np.ndarray, radius: float, rng: np.random.Generator,
                      max_aspect: float = 1.6, harmonics=HARMONICS) -> np.ndarray:
    """float [h, w] on the grid (yy, xx): distance from `centre` relative to a lumpy elliptical boundary of mean
    radius `radius` pixels (< 1 inside): a random orientation, aspect ratio uniform in [1, `max_aspect`] (area kept),
    and for each (k, a) of `harmonics` a radial Fourier term cos(k theta + phase) of amplitude uniform in [0, a]."""
    dy, dx = yy - centre[0], xx - centre[1]
    angle = rng.uniform(0, np.pi)
    aspect = rng.uniform(1.0, max_aspect)
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / np.sqrt(aspect)
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) * np.sqrt(aspect)
    distance = np.hypot(u, v)
    direction = (u + 1j * v) / np.maximum(distance, 1e-6)  # e^{i theta}; powers give cos(k theta)
    wobble = 1 + sum(rng.uniform(0, amplitude) * (direction**k * np.exp(1j * rng.uniform(0, 2 * np.pi))).real
                     for k, amplitude in harmonics)
    return distance / (radius * wobble)


def depth_maps(centres: np.ndarray, radii: np.ndarray, rng: np.random.Generator, size: int, *,
               max_aspect: float = 1.6, harmonics=HARMONICS) -> np.ndarray:
    """float32 [K, S, S] normalised radius of each nucleus (`normalised_radius`), computed in a box around it that
    holds its whole boundary (inf elsewhere)."""
    # The boundary reaches at most sqrt(aspect) * (1 + sum of amplitudes) radii from the centre (1.57 for the
    # defaults); version 1.0.0 used 1.6, which any larger box reproduces exactly.
    reach_factor = max(1.6, np.sqrt(max_aspect) * (1 + sum(a for _, a in harmonics)) + 0.05)
    depth = np.full((len(radii), size, size), np.inf, np.float32)
    for k, (centre, radius) in enumerate(zip(centres, radii)):
        reach = radius * reach_factor
        y0, x0 = np.maximum(np.floor(centre - reach).astype(int), 0)
        y1, x1 = np.minimum(np.ceil(centre + reach).astype(int) + 1, size)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        depth[k, y0:y1, x0:x1] = normalised_radius(yy, xx, centre=centre, radius=radius, rng=rng,
                                                   max_aspect=max_aspect, harmonics=harmonics)
    return depth


def deepest_inside(depth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(nearest int [S, S], rho float32 [S, S], inside bool [S, S]) of `depth` [K, S, S]: the index of the nucleus
    each pixel is deepest inside, its normalised radius there, and whether that is < 1 (the pixel is a nucleus's)."""
    if not len(depth):
        shape = depth.shape[1:]
        return np.zeros(shape, np.int64), np.full(shape, np.inf, np.float32), np.zeros(shape, bool)
    nearest = depth.argmin(axis=0)
    rho = depth.min(axis=0)
    return nearest, rho, rho < 1
