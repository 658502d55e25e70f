"""Photometric transforms of the image alone (numpy, scipy): labels, instances and weights never change.

Every function takes and returns float32 [h, w, 3] in 0..255 units and clips its result to 0..255 (a uint8 image
is accepted and converted). Grey images (three equal channels, as the nuclei data stores them) stay grey: the
colour transforms leave them unchanged and the noise is drawn once per pixel, not per channel.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as torchvision's and PIL's grey conversion


def _float(image: np.ndarray) -> np.ndarray:
    return np.asarray(image, np.float32)


def _clip(image: np.ndarray) -> np.ndarray:
    return np.clip(image, 0.0, 255.0).astype(np.float32)


def is_grey(image: np.ndarray) -> bool:
    """True when the three channels of `image` [h, w, 3] are equal everywhere."""
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2]))


def grey(image: np.ndarray) -> np.ndarray:
    """float32 [h, w] luma 0.299 R + 0.587 G + 0.114 B."""
    return _float(image) @ np.asarray(GREY_WEIGHTS, np.float32)


def scale_intensity(image: np.ndarray, factor: float) -> np.ndarray:
    """factor * x (microscopy intensity scale; torchvision's brightness factor)."""
    return _clip(_float(image) * np.float32(factor))


def shift_brightness(image: np.ndarray, delta: float) -> np.ndarray:
    """x + delta, delta in 0..255 units (MMSeg's brightness; microscopy intensity offset)."""
    return _clip(_float(image) + np.float32(delta))


def adjust_contrast(image: np.ndarray, factor: float) -> np.ndarray:
    """factor * x + (1 - factor) * m, m the mean luma of the image (torchvision's adjust_contrast)."""
    image = _float(image)
    return _clip(np.float32(factor) * image + np.float32(1 - factor) * grey(image).mean())


def adjust_saturation(image: np.ndarray, factor: float) -> np.ndarray:
    """factor * x + (1 - factor) * luma(x) per pixel (torchvision's adjust_saturation); 0 gives grey."""
    image = _float(image)
    return _clip(np.float32(factor) * image + np.float32(1 - factor) * grey(image)[..., None])


def shift_hue(image: np.ndarray, delta: float) -> np.ndarray:
    """Hue (HSV, as `colorsys`) turned by `delta`, a fraction of the colour circle in [-0.5, 0.5]; saturation and
    value kept. Grey pixels have no hue and stay as they are."""
    image = _float(image)
    if is_grey(image):
        return _clip(image)
    rgb = image / np.float32(255.0)
    value, low = rgb.max(axis=-1), rgb.min(axis=-1)
    spread = value - low
    safe = np.where(spread > 0, spread, 1)
    red, green, blue = (rgb[..., c] for c in range(3))
    # colorsys.rgb_to_hsv, vectorised: the sector of the largest channel, then the offset within it.
    hue = np.where(value == red, (green - blue) / safe,
                   np.where(value == green, 2 + (blue - red) / safe, 4 + (red - green) / safe))
    hue = (hue / 6 + np.float32(delta)) % 1
    saturation = spread / np.where(value > 0, value, 1)
    # HSV -> RGB in closed form: channel n in (5, 3, 1) is v (1 - s clip(min(k, 4 - k), 0, 1)), k = (n + 6 h) mod 6.
    k = (np.array([5.0, 3.0, 1.0], np.float32) + np.float32(6.0) * hue[..., None]) % np.float32(6.0)
    out = value[..., None] * (1 - saturation[..., None] * np.clip(np.minimum(k, 4 - k), 0, 1))
    return _clip(out * np.float32(255.0))


def adjust_gamma(image: np.ndarray, gamma: float) -> np.ndarray:
    """255 * (x / 255) ** gamma: gamma > 1 darkens the mid-tones, < 1 brightens them."""
    return _clip(255.0 * (_float(image) / 255.0) ** np.float32(gamma))


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of each channel, `sigma` in pixels, kernel truncated at 4 sigma, edges mirrored
    (scipy.ndimage's 'reflect': d c b a | a b c d)."""
    if sigma <= 0:
        return _clip(_float(image))
    return _clip(ndimage.gaussian_filter(_float(image), sigma=(sigma, sigma, 0), mode="reflect", truncate=4.0))


def _per_pixel_shape(image: np.ndarray) -> tuple[int, ...]:
    return image.shape[:2] + (1,) if is_grey(image) else image.shape


def gaussian_noise(image: np.ndarray, std: float, *, rng: np.random.Generator) -> np.ndarray:
    """x + N(0, std^2), std in 0..255 units; one draw per pixel for a grey image, per channel otherwise."""
    image = _float(image)
    return _clip(image + rng.normal(0.0, std, _per_pixel_shape(image)).astype(np.float32))


def poisson_noise(image: np.ndarray, photons: float, *, rng: np.random.Generator) -> np.ndarray:
    """Shot noise: Poisson(x / 255 * photons) / photons * 255, `photons` counted at the white level: the mean is
    kept and the variance is x * 255 / photons. A grey image gets one count per pixel."""
    image = _float(image)
    expected = image[..., :1] if is_grey(image) else image
    counts = rng.poisson(expected.astype(np.float64) * (photons / 255.0))
    noisy = (counts * (255.0 / photons)).astype(np.float32)
    return _clip(np.broadcast_to(noisy, image.shape))
