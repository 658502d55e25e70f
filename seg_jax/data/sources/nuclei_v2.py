"""`nuclei` version 2.0.0: fluorescence nuclei closer to real ones, every property set by one `NucleiParams` field.

What an image is made of, in the order it is simulated (the field that sets each property in brackets):
  magnification   one scale factor per image multiplies every length below (`magnification`);
  shape           ellipses (`max_aspect`) with a radial Fourier wobble (`irregularity`), log-normal size spread
                  (`radius_px`, `radius_log_sigma`);
  clusters        most nuclei placed against an earlier one (`touch_probability`, `touch_distance`, `min_gap`),
                  count from a density (`density`); overlaps go to the nucleus a pixel is deepest inside, so
                  touching nuclei share a boundary (`nuclei_geometry`);
  mitosis         a few small, bright nuclei (`mitotic_fraction`, `mitotic_radius_factor`, `mitotic_brightness`);
  intensity       log-normal brightness per nucleus (`brightness_log_sigma`) with a dim tail (`dim_fraction`,
                  `dim_factor`), a linear gradient across each nucleus (`gradient`), a dimmer rim (`edge_falloff`);
  chromatin       smoothed-noise texture (`texture_amplitude`, `texture_sigma_px`) and bright spots
                  (`spots_per_nucleus`, `spot_sigma_px`, `spot_amplitude`);
  optics          a sharp PSF for most nuclei, more blur for the out-of-focus ones (`blur_px`, `defocus_fraction`,
                  `defocus_blur_px`), out-of-focus haze around them (`haze`, `haze_sigma_px`);
  background      an uneven offset (`background`, `background_variation`) and vignetting (`vignetting`);
  sensor          Poisson photon noise (`photons`), Gaussian read noise (`read_noise`), exposure (`exposure`), 8 bits.
Intensities are in "brightness units" (1 = a typical nucleus) until the sensor turns them into grey levels.
`DEFAULT` makes the train / validation / test splits, `SHIFTED` the held-out `shifted` split (domain shift).
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from seg_jax.data.sources import nuclei_geometry, procedural

REFERENCE_SIZE = 96  # pixels: `density` counts nuclei per REFERENCE_SIZE x REFERENCE_SIZE pixels
_HARMONICS = (2, 3, 4, 5, 6)


@dataclasses.dataclass(frozen=True)
class NucleiParams:
    """How version-2 images are simulated; lengths in pixels at magnification 1, ranges (low, high) drawn uniformly
    (log-uniformly for `magnification` and `photons`) once per image unless said otherwise.

    Attributes:
        magnification: range of the per-image scale factor applied to every length.
        radius_px: median nucleus radius (of the circle of equal area).
        radius_log_sigma: std of log radius (log-normal size spread); radii are kept within 2.5x of the median.
        max_aspect: ellipse aspect ratios are uniform in [1, max_aspect] per nucleus.
        irregularity: harmonic k = 2..6 of the boundary gets amplitude uniform in [0, 2 * irregularity / k].
        density: mean number of nuclei (Poisson) per 96 x 96 pixels at magnification 1 (fewer when magnified).
        touch_probability: chance a nucleus is placed against an earlier one (clusters).
        touch_distance: range of centre distance / sum of radii for those (< 1: they overlap, sharing a boundary).
        min_gap: nuclei never come closer than this times the sum of radii.
        mitotic_fraction: chance a nucleus is mitotic: smaller and brighter.
        mitotic_radius_factor: mitotic radius / the radius it was drawn with.
        mitotic_brightness: range of mitotic brightness (replaces the log-normal one).
        brightness_log_sigma: std of log brightness per nucleus (median 1).
        dim_fraction, dim_factor: chance a nucleus is dim, and the range of the factor dimming it.
        gradient: largest slope of the linear intensity ramp across a nucleus, per radius (random direction).
        edge_falloff: intensity lost at the rim relative to the centre (a 1 - edge_falloff * rho^2 profile).
        texture_amplitude, texture_sigma_px: relative std and correlation length of the chromatin texture.
        spots_per_nucleus: mean number of bright chromatin spots per nucleus (Poisson over the image).
        spot_sigma_px, spot_amplitude: their Gaussian width and peak, relative to the nucleus intensity.
        blur_px: Gaussian PSF sigma of in-focus nuclei.
        defocus_fraction, defocus_blur_px: chance a nucleus is out of focus, and the range of its PSF sigma.
        haze, haze_sigma_px: out-of-focus light: this fraction of the signal blurred over haze_sigma_px.
        background: range of the mean background level, brightness units.
        background_variation: relative std of the smooth background field (correlation length 1/3 image).
        vignetting: intensity lost at the edge of the microscope's field, whose centre falls within half an image
            of the tile and whose radius is two image widths (quadratic falloff).
        photons: range of the expected photon count of brightness 1 (sets the shot-noise SNR).
        read_noise: range of the Gaussian read-noise std, grey levels.
        exposure: range of the grey level of brightness 1, as a fraction of 255 (brighter pixels saturate).
    """

    magnification: tuple[float, float] = (0.7, 1.5)
    radius_px: float = 6.0
    radius_log_sigma: float = 0.25
    max_aspect: float = 1.8
    irregularity: float = 0.05
    density: float = 20.0
    touch_probability: float = 0.6
    touch_distance: tuple[float, float] = (0.7, 0.95)
    min_gap: float = 0.55
    mitotic_fraction: float = 0.05
    mitotic_radius_factor: float = 0.65
    mitotic_brightness: tuple[float, float] = (2.2, 3.2)
    brightness_log_sigma: float = 0.35
    dim_fraction: float = 0.15
    dim_factor: tuple[float, float] = (0.15, 0.4)
    gradient: float = 0.25
    edge_falloff: float = 0.3
    texture_amplitude: float = 0.15
    texture_sigma_px: float = 1.0
    spots_per_nucleus: float = 2.5
    spot_sigma_px: float = 0.8
    spot_amplitude: float = 0.5
    blur_px: float = 0.7
    defocus_fraction: float = 0.25
    defocus_blur_px: tuple[float, float] = (1.2, 2.5)
    haze: float = 0.06
    haze_sigma_px: float = 6.0
    background: tuple[float, float] = (0.03, 0.10)
    background_variation: float = 0.3
    vignetting: float = 0.3
    photons: tuple[float, float] = (50.0, 500.0)
    read_noise: tuple[float, float] = (1.0, 3.0)
    exposure: tuple[float, float] = (0.3, 0.5)


DEFAULT = NucleiParams()
# The held-out domain: higher magnification (bigger nuclei, fewer per image), a wider size spread, denser
# clusters, more of them out of focus, stronger vignetting and an uneven background, and 5-10x fewer photons.
SHIFTED = dataclasses.replace(
    DEFAULT, magnification=(1.2, 2.0), radius_log_sigma=0.35, density=32.0, touch_probability=0.85,
    defocus_fraction=0.4, vignetting=0.5, background=(0.06, 0.16), background_variation=0.5, photons=(10.0, 50.0),
    read_noise=(2.0, 5.0), brightness_log_sigma=0.5)


@dataclasses.dataclass(frozen=True)
class Simulated:
    """One simulated image and what made it.

    Attributes:
        image: uint8 [S, S, 3], grey replicated.
        label: uint8 [S, S], 1 = nucleus.
        instances: uint16 [S, S], 1..K (0 = background).
        mitotic, out_of_focus: bool [K] per instance id - 1.
        brightness: float [K] per instance id - 1, brightness units (before gradient, texture and blur).
        clean: float32 [S, S] the expected grey level of each pixel (before noise, quantisation and clipping).
        gain: grey levels per photon; the noise variance of a pixel is gain * clean + read_noise^2.
        read_noise: grey levels.
        magnification: this image's scale factor.
    """

    image: np.ndarray
    label: np.ndarray
    instances: np.ndarray
    mitotic: np.ndarray
    out_of_focus: np.ndarray
    brightness: np.ndarray
    clean: np.ndarray
    gain: float
    read_noise: float
    magnification: float


def _log_uniform(rng: np.random.Generator, low_high: tuple[float, float]) -> float:
    return float(np.exp(rng.uniform(np.log(low_high[0]), np.log(low_high[1]))))


def _nucleus_layout(rng: np.random.Generator, size: int, p: NucleiParams, magnification: float):
    """Centres [K, 2], radii [K] pixels, mitotic bool [K] and the depth maps [K, S, S] of one image."""
    count = max(1, rng.poisson(p.density * (size / REFERENCE_SIZE) ** 2 / magnification**2))
    median = p.radius_px * magnification
    radii = np.clip(median * np.exp(p.radius_log_sigma * rng.standard_normal(count)), median / 2.5, median * 2.5)
    centres, radii = nuclei_geometry.place_centres(rng, radii, size, touch_probability=p.touch_probability,
                                                   touch_distance=p.touch_distance, min_gap=p.min_gap)
    # Mitotic cells round up and shrink after placement, so they tend to stand a little apart.
    mitotic = rng.random(len(radii)) < p.mitotic_fraction
    radii = np.where(mitotic, radii * p.mitotic_radius_factor, radii)
    harmonics = tuple((k, 2 * p.irregularity / k) for k in _HARMONICS)
    # float32 centres keep the per-pixel shape arithmetic in float32 (2x faster than version 1's float64).
    centres = centres.astype(np.float32)
    depth = nuclei_geometry.depth_maps(centres, radii, rng, size, max_aspect=p.max_aspect, harmonics=harmonics)
    return centres, radii, mitotic, depth


def _chromatin(rng: np.random.Generator, inside: np.ndarray, count: int, p: NucleiParams,
               magnification: float) -> np.ndarray:
    """float [S, S] multiplicative texture: smoothed noise times (1 + bright spots) at nucleus pixels."""
    texture = 1 + p.texture_amplitude * procedural.smooth_noise(rng, inside.shape,
                                                                sigma=p.texture_sigma_px * magnification)
    pixels = np.flatnonzero(inside)
    spots = np.zeros(inside.size, np.float32)
    if len(pixels):
        np.add.at(spots, rng.choice(pixels, rng.poisson(p.spots_per_nucleus * count)), 1.0)
    sigma = p.spot_sigma_px * magnification
    spots = ndimage.gaussian_filter(spots.reshape(inside.shape), sigma) * (2 * np.pi * sigma**2)  # peak 1 per spot
    return np.clip(texture, 0.2, None) * (1 + p.spot_amplitude * spots)


def _add_blurred(out: np.ndarray, part: np.ndarray, *, sigma: float, centre: np.ndarray, reach: float) -> None:
    """out += gaussian_filter(part, sigma) for `part` float [S, S] zero beyond `reach` pixels of `centre`; filtered
    in a box with a margin as wide as the kernel, which gives the same values (zeros reflect to zeros)."""
    margin = reach + int(4 * sigma + 0.5) + 1  # scipy's kernel radius at truncate=4
    y0, x0 = np.maximum(np.floor(centre - margin).astype(int), 0)
    y1, x1 = np.minimum(np.ceil(centre + margin).astype(int) + 1, out.shape[0])
    out[y0:y1, x0:x1] += ndimage.gaussian_filter(part[y0:y1, x0:x1], sigma)


def simulate(rng: np.random.Generator, size: int, *, params: NucleiParams = DEFAULT) -> Simulated:
    """One `size` x `size` fluorescence image of nuclei simulated with `params` (module docstring)."""
    p = params
    magnification = _log_uniform(rng, p.magnification)
    centres, radii, mitotic, depth = _nucleus_layout(rng, size, p, magnification)
    count = len(radii)
    nearest, rho, inside = nuclei_geometry.deepest_inside(depth)

    brightness = np.exp(p.brightness_log_sigma * rng.standard_normal(count))
    brightness *= np.where(rng.random(count) < p.dim_fraction, rng.uniform(*p.dim_factor, count), 1.0)
    brightness = np.where(mitotic, rng.uniform(*p.mitotic_brightness, count), brightness)
    direction = rng.uniform(0, 2 * np.pi, count)
    slope = rng.uniform(0, p.gradient, count)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    along = ((xx - centres[nearest, 1]) * np.cos(direction[nearest])
             + (yy - centres[nearest, 0]) * np.sin(direction[nearest])) / radii[nearest]
    ramp = np.clip(1 + slope[nearest] * along, 0.3, None)
    profile = 1 - p.edge_falloff * np.minimum(rho, 1) ** 2
    chromatin = _chromatin(rng, inside, count, p, magnification)
    signal = np.where(inside, brightness[nearest] * profile * ramp * chromatin, 0.0).astype(np.float32)

    # Depth: each out-of-focus nucleus is blurred with its own PSF; the rest share the in-focus one.
    out_of_focus = rng.random(count) < p.defocus_fraction
    sigmas = np.where(out_of_focus, rng.uniform(*p.defocus_blur_px, count), p.blur_px) * magnification
    owner = np.where(inside, nearest, -1)
    blurred = ndimage.gaussian_filter(np.where(inside & ~out_of_focus[nearest], signal, 0), p.blur_px * magnification)
    for k in np.flatnonzero(out_of_focus):
        _add_blurred(blurred, np.where(owner == k, signal, 0), sigma=sigmas[k], centre=centres[k], reach=radii[k] * 2)
    haze = p.haze * ndimage.gaussian_filter(signal, p.haze_sigma_px * magnification)

    level = rng.uniform(*p.background)
    background = level * np.clip(1 + p.background_variation * procedural.smooth_noise(rng, (size, size),
                                                                                      sigma=size / 3), 0.2, None)
    field_centre = rng.uniform(-0.5, 1.5, 2) * size
    field_radius = np.hypot(yy - field_centre[0], xx - field_centre[1]) / (2 * size)
    vignetting = 1 - p.vignetting * np.minimum(field_radius, 1) ** 2
    expected = vignetting * (blurred + haze + background)  # brightness units

    photons = _log_uniform(rng, p.photons)
    gain = rng.uniform(*p.exposure) * 255 / photons
    read_noise = rng.uniform(*p.read_noise)
    counts = rng.poisson(np.maximum(expected, 0) * photons)
    grey = gain * counts + read_noise * rng.standard_normal((size, size))
    image = np.repeat(np.clip(np.rint(grey), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)

    raw = np.where(inside, nearest + 1, 0)
    kept = np.unique(raw[raw > 0]) - 1  # nuclei hidden entirely by others vanish; ids follow `relabel_consecutive`
    return Simulated(image=image, label=inside.astype(np.uint8), instances=procedural.relabel_consecutive(raw),
                     mitotic=mitotic[kept], out_of_focus=out_of_focus[kept], brightness=brightness[kept],
                     clean=(gain * photons * expected).astype(np.float32), gain=float(gain),
                     read_noise=float(read_noise), magnification=magnification)


def render(rng: np.random.Generator, size: int, *, params: NucleiParams = DEFAULT
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image uint8 [S, S, 3], label uint8 [S, S], instances uint16 [S, S]) of `simulate`: a procedural render
    function (`procedural.RenderFn`) once `params` is bound."""
    out = simulate(rng, size, params=params)
    return out.image, out.label, out.instances


def render_default(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`render` with `DEFAULT`: the train, validation and test splits."""
    return render(rng, size, params=DEFAULT)


def render_shifted(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`render` with `SHIFTED`: the held-out `shifted` split."""
    return render(rng, size, params=SHIFTED)
