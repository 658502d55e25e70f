"""The training augmentation of one example: `config.data.augment` checked into `AugmentOptions`, and
`augment_example`, which draws every random value from the example's RNG in a fixed order and applies the stages.

Stages (each drawn only when enabled, so a transform that is off draws nothing and the default run's random
stream, hence its batches, are those of the code before `data.augment` existed):
    1. crop window: rescale + crop (data.scale_range, data.crop_size; `augment.sample_crop`) or, with
       probability resized_crop.p, a random resized crop; class-aware with cat_max_ratio < 1; hflip
    2. vflip, rot90 (`augment.dihedral`)
    3. rotate, elastic: one resampling of the composed map (`warp`)
    4. photometric, image only, in `PHOTOMETRIC` order (`photometric`)
Geometry runs on the crop (stage 1 first), so its cost does not grow with the stored image size.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import numpy as np

from seg_jax.data.config import augment_config
from seg_jax.data.pipeline import augment, photometric, warp


@dataclasses.dataclass(frozen=True)
class Chance:
    """A transform applied with probability `p`, its value drawn uniformly from [low, high]."""

    p: float = 0.0
    low: float = 0.0
    high: float = 0.0

    def happens(self, rng: np.random.Generator) -> bool:
        """A Bernoulli(p) draw; no draw at all when p == 0."""
        return self.p > 0 and bool(rng.random() < self.p)

    def draw(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))


@dataclasses.dataclass(frozen=True)
class ResizedCrop:
    p: float = 0.0
    area: tuple[float, float] = (0.08, 1.0)
    aspect: tuple[float, float] = (3 / 4, 4 / 3)


@dataclasses.dataclass(frozen=True)
class Elastic:
    p: float = 0.0
    alpha: float = 0.0  # pixels, std of each control point's displacement
    grid: int = 3  # control points per side


# name -> (apply(image float32 [h, w, 3], value, rng), smallest value, largest value, the smallest excluded),
# in the order they run: intensity and noise model the microscope, the colour jitter sits between them.
PHOTOMETRIC: Mapping[str, tuple[Callable[..., np.ndarray], float, float, bool]] = {
    "intensity": (lambda image, v, rng: photometric.scale_intensity(image, v), 0.0, math.inf, False),
    "brightness": (lambda image, v, rng: photometric.shift_brightness(image, v), -255.0, 255.0, False),
    "contrast": (lambda image, v, rng: photometric.adjust_contrast(image, v), 0.0, math.inf, False),
    "saturation": (lambda image, v, rng: photometric.adjust_saturation(image, v), 0.0, math.inf, False),
    "hue": (lambda image, v, rng: photometric.shift_hue(image, v), -0.5, 0.5, False),
    "gamma": (lambda image, v, rng: photometric.adjust_gamma(image, v), 0.0, math.inf, True),
    "blur": (lambda image, v, rng: photometric.gaussian_blur(image, v), 0.0, math.inf, False),
    "gaussian_noise": (lambda image, v, rng: photometric.gaussian_noise(image, v, rng=rng), 0.0, math.inf, False),
    "poisson_noise": (lambda image, v, rng: photometric.poisson_noise(image, v, rng=rng), 0.0, math.inf, True),
}


@dataclasses.dataclass(frozen=True)
class AugmentOptions:
    """`data.augment` checked (`augment_options`); the defaults are all off. See `data.config.augment_config`."""

    cat_max_ratio: float = 1.0
    resized_crop: ResizedCrop = ResizedCrop()
    vflip: bool = False
    rot90: bool = False
    rotate: Chance = Chance()
    elastic: Elastic = Elastic()
    photometric: tuple[tuple[str, Chance], ...] = ()  # (name, chance) in `PHOTOMETRIC` order, only those with p > 0


def _field(name: str) -> str:
    return f"data.augment.{name}"


def _number(value: Any, name: str, *, low: float = -math.inf, high: float = math.inf, low_open: bool = False,
            integer: bool = False) -> float:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) or not (
            (value > low if low_open else value >= low) and value <= high):
        bound = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{_field(name)} must be {kind} in {bound}, got {value!r}")
    return value


def _interval(value: Any, name: str, *, low: float = -math.inf, high: float = math.inf,
              low_open: bool = False) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{_field(name)} must be (low, high), got {value!r}")
    first, second = (float(_number(v, name, low=low, high=high, low_open=low_open)) for v in value)
    if first > second:
        raise ValueError(f"{_field(name)} must be (low, high) with low <= high, got {value!r}")
    return first, second


def _section(cfg: Mapping[str, Any], name: str, defaults: Mapping[str, Any]) -> Mapping[str, Any]:
    value = cfg.get(name, defaults[name])
    if isinstance(defaults[name], Mapping):
        if not isinstance(value, Mapping):
            raise ValueError(f"{_field(name)} must be a mapping with keys {', '.join(defaults[name])}, got {value!r}")
        unknown = sorted(set(value) - set(defaults[name]))
        if unknown:
            raise ValueError(f"{_field(name)} has no key(s) {', '.join(unknown)}; its keys: "
                             f"{', '.join(defaults[name])}")
        value = {**defaults[name], **value}
    return value


def augment_options(cfg: Mapping[str, Any] | None) -> AugmentOptions:
    """`config.data.augment` (None = all off) as `AugmentOptions`, keys missing from it at their defaults.

    Raises:
        ValueError: an unknown key or a value out of its range, the message naming `data.augment.<key>`.
    """
    defaults = augment_config().to_dict()
    if hasattr(cfg, "as_configdict"):  # a FrozenConfigDict (a resolved dataset's config)
        cfg = cfg.as_configdict()
    cfg = {} if cfg is None else cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    unknown = sorted(set(cfg) - set(defaults))
    if unknown:
        raise ValueError(f"data.augment has no key(s) {', '.join(unknown)}; its keys: {', '.join(defaults)}")
    for flag in ("vflip", "rot90"):
        if not isinstance(_section(cfg, flag, defaults), bool):
            raise ValueError(f"{_field(flag)} must be True or False, got {cfg[flag]!r}")

    def probability(name: str) -> float:
        return float(_number(_section(cfg, name, defaults)["p"], f"{name}.p", low=0.0, high=1.0))

    def chance(name: str, **bounds: Any) -> Chance:
        low, high = _interval(_section(cfg, name, defaults)["range"], f"{name}.range", **bounds)
        return Chance(p=probability(name), low=low, high=high)

    resized = _section(cfg, "resized_crop", defaults)
    elastic = _section(cfg, "elastic", defaults)
    photometric_chances = []
    for name, (_, low, high, low_open) in PHOTOMETRIC.items():
        found = chance(name, low=low, high=high, low_open=low_open)
        if found.p > 0:
            photometric_chances.append((name, found))
    return AugmentOptions(
        cat_max_ratio=float(_number(_section(cfg, "cat_max_ratio", defaults), "cat_max_ratio", low=0.0, high=1.0,
                                    low_open=True)),
        resized_crop=ResizedCrop(p=probability("resized_crop"),
                                 area=_interval(resized["area"], "resized_crop.area", low=0.0, high=1.0,
                                                low_open=True),
                                 aspect=_interval(resized["aspect"], "resized_crop.aspect", low=0.0, low_open=True)),
        vflip=_section(cfg, "vflip", defaults), rot90=_section(cfg, "rot90", defaults),
        rotate=chance("rotate"),
        elastic=Elastic(p=probability("elastic"), alpha=float(_number(elastic["alpha"], "elastic.alpha", low=0.0)),
                        grid=int(_number(elastic["grid"], "elastic.grid", low=2, integer=True))),
        photometric=tuple(photometric_chances))


def augment_example(example: dict[str, Any], rng: np.random.Generator, *, crop_size: tuple[int, int],
                    scale_range: tuple[float, float], hflip: bool, ignore_index: int,
                    options: AugmentOptions = AugmentOptions()) -> dict[str, Any]:
    """The augmented example: spatial keys [crop_h, crop_w, ...] (the stages of the module docstring), the image
    uint8 as stored when no photometric transform ran, else float32 in 0..255 units."""
    label = example["label"] if options.cat_max_ratio < 1.0 else None
    class_aware = dict(label=label, cat_max_ratio=options.cat_max_ratio, ignore_index=ignore_index)
    image_size = example["image"].shape[:2]
    if options.resized_crop.p > 0 and rng.random() < options.resized_crop.p:
        window = augment.sample_resized_crop(rng, image_size=image_size, area=options.resized_crop.area,
                                             aspect=options.resized_crop.aspect, hflip=hflip, **class_aware)
        example = augment.resized_crop(example, window, crop_size=crop_size)
    else:
        params = augment.sample_crop(rng, image_size=image_size, crop_size=crop_size, scale_range=scale_range,
                                     hflip=hflip, **class_aware)
        example = augment.crop_and_flip(example, params, crop_size=crop_size, ignore_index=ignore_index)
    vflip = options.vflip and bool(rng.random() < 0.5)
    quarter_turns = 0
    if options.rot90:  # a non-square crop keeps its shape: half turns only
        quarter_turns = int(rng.integers(4)) if crop_size[0] == crop_size[1] else 2 * int(rng.integers(2))
    example = augment.dihedral(example, vflip=vflip, rot90=quarter_turns)
    example = _warp(example, rng, options=options, ignore_index=ignore_index)
    image = example["image"]
    for name, found in options.photometric:
        if found.happens(rng):
            image = PHOTOMETRIC[name][0](image, found.draw(rng), rng)
    return example if image is example["image"] else {**example, "image": image}


def _warp(example: dict[str, Any], rng: np.random.Generator, *, options: AugmentOptions,
          ignore_index: int) -> dict[str, Any]:
    """Stage 3: a rotation and / or elastic deformation composed into one resampling (none when neither is drawn)."""
    degrees = options.rotate.draw(rng) if options.rotate.happens(rng) else None
    elastic = options.elastic
    displacements = None
    if elastic.p > 0 and rng.random() < elastic.p:
        displacements = rng.normal(0.0, elastic.alpha, (2, elastic.grid, elastic.grid))
    if degrees is None and displacements is None:
        return example
    size = example["image"].shape[:2]
    points = warp.identity_points(size)
    if displacements is not None:  # composed: the image is interpolated once, not once per warp
        points = warp.elastic_points(points, displacements, size=size)
    if degrees is not None:
        points = warp.rotate_points(points, degrees=degrees, size=size)
    return warp.resample(example, points, ignore_index=ignore_index)
