"""`nuclei`: procedural fluorescence-like images of blob-shaped nuclei (the DSB-2018 situation).

Nuclei are lumpy ellipses of varying brightness, most of them in clusters where they touch: a
pixel covered by several nuclei goes to the one whose boundary it is deepest inside, so touching
nuclei share a boundary with no background between them (`nuclei_geometry`). Blur, uneven background
and signal-dependent noise follow, so thresholding plus connected components merges touching nuclei
and instance separation has to be learned (e.g. from boundary weights or a third class).

Versions (`data.version`; TFDS keeps each in its own directory):
  1.0.0 (the default): `render_nuclei` below, sizes relative to the image, slightly tinted grey; splits
        train / validation / test.
  2.0.0: `nuclei_v2` (magnification range, log-normal sizes, chromatin, dim tail, mitotic nuclei,
        depth-varying blur, vignetting, Poisson-Gaussian noise; grey), plus a held-out split `shifted`
        (as many images as validation) simulated with other parameters (`nuclei_v2.SHIFTED`) for
        zero-shot domain-shift checks.
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from seg_jax.data.sources import nuclei_geometry, nuclei_v2, procedural

CLASS_NAMES = ("background", "nucleus")

def render_nuclei(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One fluorescence-like image of `size` x `size` pixels.

    Returns:
        image uint8 [S, S, 3] (grey, slightly tinted), label uint8 [S, S] (1 = nucleus),
        instances uint16 [S, S] numbered 1..K (0 = background).
    """
    count = rng.integers(6, 19)
    centres, radii = nuclei_geometry.place_centres(rng, size * rng.uniform(0.045, 0.08, count), size)
    nearest, rho, inside = nuclei_geometry.deepest_inside(nuclei_geometry.depth_maps(centres, radii, rng, size))
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


SHIFTED_SPLIT = "shifted"


class NucleiBuilder(procedural.ProceduralBuilder, skip_registration=True):
    """TFDS builder `seg_jax_nuclei`; variants in `procedural.VARIANTS`, versions in the module docstring."""

    name = "seg_jax_nuclei"
    SUPPORTED_VERSIONS = [tfds.core.Version("2.0.0")]  # VERSION, the default, stays 1.0.0
    RELEASE_NOTES = {"1.0.0": "First version.",
                     "2.0.0": "More realistic generator (nuclei_v2) and a held-out 'shifted' split."}
    CLASS_NAMES = CLASS_NAMES
    DESCRIPTION = __doc__
    render = staticmethod(render_nuclei)  # version 1.0.0

    def split_plans(self):
        plans = super().split_plans()
        if self.version.major == 1:
            return plans
        plans = {split: (nuclei_v2.render_default, count) for split, (_, count) in plans.items()}
        plans[SHIFTED_SPLIT] = (nuclei_v2.render_shifted, self.builder_config.num_validation)
        return plans
