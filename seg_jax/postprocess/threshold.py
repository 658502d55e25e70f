"""Classical foreground from the image alone (no model): Otsu's threshold of the grey level.

`otsu_probabilities` gives the two-channel "probabilities" that `instances_from_semantic` takes, so the classical
baselines (Otsu + connected components, Otsu + distance-transform watershed) run through the same post-processing
and the same instance metrics as the learned methods (`evals.<name>.source = "otsu"`).
"""
from __future__ import annotations

import numpy as np
from skimage import filters

POLARITIES = ("bright", "dark")


def grey(image: np.ndarray) -> np.ndarray:
    """float64 `[H, W]` grey level (0..255) of a uint8 `[H, W, 3]` image: the mean of its channels, so that a
    fluorescence stain in any one channel counts (luminance weights would all but drop a blue DAPI channel)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be [H, W, 3], got shape {image.shape}")
    return image.astype(np.float64).mean(axis=-1)


def otsu_probabilities(image: np.ndarray, *, valid: np.ndarray | None = None,
                       foreground: str = "bright") -> np.ndarray:
    """Foreground where the grey level is above (or below) its Otsu threshold, as probabilities 0 / 1.

    Args:
      image: uint8 `[H, W, 3]`.
      valid: bool `[H, W]`, the pixels the threshold is computed from and that may be foreground (e.g. not
        ignored or padding); None = all.
      foreground: "bright" (fluorescence: nuclei brighter than the background) or "dark" (brightfield, stains).

    Returns:
      float32 `[H, W, 2]`: channel 0 background, channel 1 foreground, each 0 or 1; all background when the
      valid pixels have a single grey level (no threshold separates anything).
    """
    if foreground not in POLARITIES:
        raise ValueError(f"unknown foreground {foreground!r}; valid: {', '.join(POLARITIES)}")
    level = grey(image)
    valid = np.ones(level.shape, bool) if valid is None else np.asarray(valid, bool)
    values = level[valid]
    if values.size == 0 or values.min() == values.max():
        mask = np.zeros(level.shape, bool)
    else:
        threshold = filters.threshold_otsu(values)
        mask = (level > threshold if foreground == "bright" else level <= threshold) & valid
    return np.stack([~mask, mask], axis=-1).astype(np.float32)
