"""What the procedural datasets (`shapes`, `nuclei`) share: their TFDS builder, size variants and noise.

Every example is rendered by a pure function `render(rng, image_size) -> (image, label, instances)`
from its own generator seeded with (variant seed, split, example number), so a dataset is a pure
function of its variant and version: the same files on every machine, whatever the generation order.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image
from scipy import ndimage

from seg_jax.data.sources import tfds_format

# One render function: rng, image size in pixels -> image uint8 [S, S, 3], label uint8 [S, S],
# instances uint16 [S, S].
RenderFn = Callable[[np.random.Generator, int], "tuple[np.ndarray, np.ndarray, np.ndarray]"]

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(eq=False)
class ProceduralConfig(tfds.core.BuilderConfig):
    """A size variant: square images of `image_size` pixels and the number of images per split."""

    image_size: int = 96
    num_train: int = 1000
    num_validation: int = 200
    num_test: int = 200
    seed: int = 0


VARIANTS = (
    ProceduralConfig(name="default", description="96x96 pixels; 1000 / 200 / 200 images.",
                     image_size=96, num_train=1000, num_validation=200, num_test=200, seed=0),
    ProceduralConfig(name="tiny", description="32x32 pixels; 24 / 8 / 8 images (for tests).",
                     image_size=32, num_train=24, num_validation=8, num_test=8, seed=1),
)


class ProceduralBuilder(tfds_format.StoredBuilder, skip_registration=True):
    """Base builder; a subclass sets `name`, `CLASS_NAMES`, `DESCRIPTION` and `render`."""

    BUILDER_CONFIGS = list(VARIANTS)
    CLASS_NAMES: tuple[str, ...] = ()
    DESCRIPTION = ""
    render: RenderFn

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds_format.stored_info(self, class_names=self.CLASS_NAMES, has_instances=True,
                                       description=self.DESCRIPTION)

    def split_plans(self) -> dict[str, tuple[RenderFn, int]]:
        """split -> (render function, number of images) at this builder's version: `render` for the `SPLITS`
        here; a builder whose versions differ overrides it. Example k of the i-th split is rendered from
        rng (variant seed, i, k)."""
        config = self.builder_config
        render = type(self).render
        return {"train": (render, config.num_train), "validation": (render, config.num_validation),
                "test": (render, config.num_test)}

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        return {split: self._generate_examples(split=split, stream=stream, render=render, count=count)
                for stream, (split, (render, count)) in enumerate(self.split_plans().items())}

    def _generate_examples(self, *, split: str, stream: int, render: RenderFn, count: int):
        config = self.builder_config
        for number in range(count):
            rng = np.random.default_rng([config.seed, stream, number])
            image, label, instances = render(rng, config.image_size)
            example_id = f"{split}_{number:05d}"
            yield example_id, tfds_format.stored_example(image=image, label=label, instances=instances,
                                                         example_id=example_id)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], *, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise, float32 `shape`, rescaled to zero mean and unit std.

    `sigma` (pixels) is the correlation length; it acts on the first two axes only. Long lengths
    are filtered on a grid `sigma / 2` times coarser and upsampled bilinearly (fast, same look).
    """
    step = max(1, int(sigma // 2))
    coarse_shape = tuple(-(-n // step) + 1 for n in shape[:2]) + tuple(shape[2:])
    coarse = rng.standard_normal(coarse_shape, dtype=np.float32)
    coarse = ndimage.gaussian_filter(coarse, (sigma / step,) * 2 + (0,) * (len(shape) - 2), mode="wrap")
    field = _resize_bilinear(coarse, shape[:2]) if step > 1 else coarse[: shape[0], : shape[1]]
    return (field - field.mean()) / (field.std() + 1e-6)


def _resize_bilinear(field: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float32 [h, w, ...] resized bilinearly to [H, W, ...] (Pillow, per channel: faster than ndimage.zoom)."""
    channels = field.reshape(field.shape[:2] + (-1,))
    resized = [np.asarray(Image.fromarray(np.ascontiguousarray(channels[..., c])).resize(size[::-1], Image.BILINEAR))
               for c in range(channels.shape[-1])]
    return np.stack(resized, axis=-1).reshape(tuple(size) + field.shape[2:])


def blur_and_noise(image: np.ndarray, rng: np.random.Generator, *, blur_sigma: float,
                   noise_sigma: float) -> np.ndarray:
    """Optics then sensor: Gaussian blur (pixels) and additive Gaussian noise (0..255 units).

    Args:
        image: float [H, W, 3] in 0..255 units.
    Returns:
        uint8 [H, W, 3].
    """
    blurred = ndimage.gaussian_filter(image.astype(np.float32), (blur_sigma, blur_sigma, 0))
    noisy = blurred + noise_sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def relabel_consecutive(instances: np.ndarray) -> np.ndarray:
    """Instance ids (non-negative ints) renumbered 1..K in increasing order (0 stays background),
    uint16 [H, W]. Objects hidden completely by later ones vanish instead of leaving gaps."""
    present = np.zeros(int(instances.max()) + 1, np.int64)
    present[instances] = 1
    present[0] = 0
    return np.cumsum(present)[instances].astype(np.uint16)
