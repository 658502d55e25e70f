"""`base_config`: every data key with its default, documented in one place.

Light on purpose: experiment configs are built without TFDS or grain, so this module imports neither
(nor the catalog). `DATASET_DEFAULTS` names every registered dataset; a test keeps it equal to the
catalog's `DATASETS`.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import ml_collections
from ml_collections import config_dict

from seg_jax import labels

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # 0..255 units
IMAGENET_STD = (58.395, 57.12, 57.375)
# (mean, std) in 0..255 units that pretrained weights expect, by `model.pretrained_normalization`: torchvision's and
# most timm models take "imagenet"; timm's Inception-style models (mean = std = 0.5 of 0..1) take "inception".
NORMALIZATIONS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "inception": ((127.5,) * 3, (127.5,) * 3)}
from seg_jax.data.derived.targets import DISTANCE_TARGETS  # noqa: E402  (`data.distance_target` values)

# `base_config` values that differ from the generic ones, per registered dataset.
DATASET_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    "shapes": dict(crop_size=(96, 96), scale_range=(0.75, 1.5)),
    "nuclei": dict(crop_size=(96, 96), scale_range=(0.75, 1.5)),
    "folder": dict(crop_size=(256, 256), scale_range=(0.5, 2.0)),
    "oxford_iiit_pet": dict(eval_split="test", crop_size=(256, 256), scale_range=(0.5, 1.5), eval_size=(512, 512)),
    "cityscapes": dict(crop_size=(512, 1024), scale_range=(0.5, 2.0)),
}


def default_data_dir() -> str:
    """$SEG_JAX_DATA_DIR, else ~/.cache/seg_jax/tfds."""
    return os.environ.get("SEG_JAX_DATA_DIR") or os.path.expanduser("~/.cache/seg_jax/tfds")


def base_config(name: str = "shapes") -> ml_collections.ConfigDict:
    """The data config of dataset `name` with all keys at their defaults.

    Keys:
        name: registered dataset (`DATASET_DEFAULTS`): shapes, nuclei, folder, oxford_iiit_pet, cityscapes.
        variant: builder config of procedural datasets ("default" 96x96, "tiny" 32x32) and the
            sub-directory of a converted folder dataset; unused by the public datasets.
        version: builder version of a procedural dataset, None = its default: "1.0.0" (default) or "2.0.0"
            for nuclei (`sources.nuclei`: the more realistic generator, with a held-out split "shifted"),
            "1.1.0" for shapes; other datasets take None only. Not a model field: a run may be evaluated on
            another version (`--mode=eval --config.data.version=2.0.0 --split=shifted`, zero-shot).
        data_dir: TFDS data dir ($SEG_JAX_DATA_DIR or ~/.cache/seg_jax/tfds).
        train_split, eval_split: TFDS split names; slices such as "train[:90%]" work.
        crop_size: (height, width) pixels of training crops.
        scale_range: (min, max) random rescale factor before cropping.
        hflip: random horizontal flips in training.
        eval_size: None = native size (all eval images must share it); else (height, width): each
            image is shrunk to fit if larger (aspect kept), then padded bottom/right with ignore; the
            network predicts at that size and the evaluators score at each image's native resolution
            (outputs resized back bilinearly, untouched labels: `seg_jax.evaluators.native`).
        mean, std: per-channel normalisation in 0..255 units.
        ignore_index: label value ignored by losses and metrics (padding uses it too).
        targets: the class map trained on: "semantic" (the stored class map) or "border" (3 classes
            "background", "interior", "border" derived from the instance ids; `border_width` pixels
            inside every outline and in gaps up to that wide between instances).
        border_width: pixels, border thickness of `targets = "border"`.
        weight_map: per-pixel loss weights: None (1 everywhere) or "unet" (the U-Net paper's
            w_c + w0 exp(-(d1 + d2)^2 / (2 sigma^2)), d1/d2 the distances to the nearest two instances,
            w_c inverse-frequency class weights of the trained classes over the train split).
        weight_map_w0, weight_map_sigma: w0 and sigma (pixels) of the "unet" weight map.
        distance_target: None, or "normalized": each instance's distance to its outline divided by its maximum
            (values in [0, 1], 0 on background; `derived.targets.instance_distance`), batched as `distance`
            float32 [h, w] for a loss term that regresses it (loss "distance").
            Any choice but targets = "semantic" with weight_map = None and distance_target = None needs instance
            ids (nuclei, shapes,
            a folder converted with instances): the targets are computed once when the dataset is
            prepared and stored in a derived dataset named after these values (`data.derived.stored_targets`).
        num_workers: grain worker processes (0 = read in this process).
        prefetch: grain reader threads per process, and batches read ahead.
        cache_mb: a split whose decoded examples take at most this many MiB (its first example's arrays × its
            length) is kept in memory after each example's first read, so later epochs skip decoding; 0 = decode
            every read. Each grain worker process holds its own copy. Changes no value, only speed.
        folder: the `folder` dataset's sources (images, labels, instances dirs, num_classes,
            class_names, val_fraction, seed), converted into data_dir on first use. An existing
            conversion must agree with the keys set here (`data.resolve` names each field that differs);
            val_fraction 0 (or a single image) converts no validation split. folder.intensity (method, low,
            high): how 16-bit and float images become 8-bit, "percentile" (per image, percentiles low/high, default
            1 / 99.8, map to 0 / 255) or "range" (fixed values low/high map to 0 / 255); None refuses such
            images. Stored with the conversion; `--mode=predict` scales new images alike.
        cityscapes_manual_dir: directory holding the Cityscapes zips (manual download).
        max_instances: detection models (Mask R-CNN): ground-truth instances per image after
            augmentation, padded to this fixed number; the largest are kept when there are more.
        augment: the training augmentation beyond crop_size / scale_range / hflip, all off by default
            (`augment_config` documents each key; `seg_jax.data.pipeline.policy` applies them in order).

    Raises:
        KeyError: unknown `name`; the message lists the valid ones.
    """
    if name not in DATASET_DEFAULTS:
        raise KeyError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASET_DEFAULTS))}")
    cfg = ml_collections.ConfigDict()
    cfg.name = name
    cfg.variant = "default"
    cfg.version = config_dict.placeholder(str)
    cfg.data_dir = default_data_dir()
    cfg.train_split = "train"
    cfg.eval_split = "validation"
    cfg.crop_size = (96, 96)
    cfg.scale_range = (0.75, 1.5)
    cfg.hflip = True
    cfg.eval_size = config_dict.placeholder(tuple)
    cfg.mean = IMAGENET_MEAN
    cfg.std = IMAGENET_STD
    cfg.ignore_index = labels.IGNORE_INDEX
    cfg.targets = "semantic"
    cfg.border_width = 2
    cfg.weight_map = config_dict.placeholder(str)
    cfg.weight_map_w0 = 10.0
    cfg.weight_map_sigma = 5.0
    cfg.distance_target = config_dict.placeholder(str)
    cfg.num_workers = 0
    cfg.prefetch = 2
    cfg.cache_mb = 1024
    cfg.folder = ml_collections.ConfigDict(dict(
        images=config_dict.placeholder(str),
        labels=config_dict.placeholder(str),
        instances=config_dict.placeholder(str),
        num_classes=config_dict.placeholder(int),
        class_names=config_dict.placeholder(tuple),
        val_fraction=0.1,
        seed=0,
        intensity=ml_collections.ConfigDict(dict(method=config_dict.placeholder(str),
                                                 low=config_dict.placeholder(float),
                                                 high=config_dict.placeholder(float))),
    ))
    cfg.cityscapes_manual_dir = config_dict.placeholder(str)
    cfg.max_instances = 16
    cfg.augment = augment_config()
    for key, value in DATASET_DEFAULTS[name].items():
        cfg[key] = value
    return cfg


def augment_config() -> ml_collections.ConfigDict:
    """`data.augment`: the training augmentation after today's rescale / crop / hflip, every transform off.

    Stages, in the order they run (`seg_jax.data.pipeline.policy`); each `p` is the probability that a
    transform is applied to an example, each `range` = (low, high) the interval its value is drawn from uniformly:
        cat_max_ratio: MMSeg's class-aware crop: the crop window is redrawn up to 10 times until no single class
            covers `cat_max_ratio` or more of its labelled pixels (ignore never counts) and at least two classes
            are present; 1.0 = off. Applies to both crops below.
        resized_crop: {p, area, aspect}: with probability p, torchvision's RandomResizedCrop instead of
            rescale + crop: a window of `area` (fraction of the image) and `aspect` (width / height, drawn
            log-uniformly) resized to crop_size; data.scale_range is then unused.
        vflip: random vertical flips (a fair coin, as hflip).
        rot90: random rotation by k * 90 degrees, k uniform in 0..3 (0 or 2 for a non-square crop_size).
            With hflip and vflip it draws from all 8 symmetries of the square.
        rotate: {p, range}: rotation by an angle in degrees (counter-clockwise positive) about the crop centre;
            pixels from outside the crop get the ignore index in labels and 0 in image, instances and weights.
        elastic: {p, alpha, grid}: the U-Net paper's elastic deformation: random displacements on a coarse
            `grid` x `grid` of control points spanning the crop, drawn from N(0, alpha^2) (alpha in pixels; the
            paper's 3 x 3 grid, 10 px), interpolated to every pixel by a cubic spline. The grid spacing sets the
            smoothness (the role of sigma in Simard's per-pixel version), alpha the magnitude; 0 = identity.
        Photometric, on the image only (float 0..255 units, clipped to 0..255 after each; a grey image whose
        three channels are equal stays grey):
        intensity: {p, range}: multiply by a factor (microscopy intensity scale; torchvision's brightness).
        brightness: {p, range}: add an offset in 0..255 units (MMSeg's brightness delta; intensity offset).
        contrast: {p, range}: f x + (1 - f) mean(grey(x)), grey = 0.299 R + 0.587 G + 0.114 B (torchvision's).
        saturation: {p, range}: f x + (1 - f) grey(x) per pixel (torchvision's); no effect on grey images.
        hue: {p, range}: hue shifted by this fraction of the colour circle (HSV); no effect on grey images.
        gamma: {p, range}: 255 (x / 255)^gamma.
        blur: {p, range}: Gaussian blur, range of sigma in pixels (truncated at 4 sigma, edges reflected).
        gaussian_noise: {p, range}: additive N(0, std^2) per pixel, range of std in 0..255 units.
        poisson_noise: {p, range}: shot noise: Poisson(x / 255 * n) / n * 255, range of n = photons counted at
            the white level (fewer photons, more noise).
    Geometric transforms move image, label, instances and weights together (image bilinear, the others
    nearest, so no label value is interpolated); photometric ones change the image alone.
    """
    def chance(low: float, high: float) -> dict[str, Any]:
        return dict(p=0.0, range=(low, high))

    return ml_collections.ConfigDict(dict(
        cat_max_ratio=1.0,
        resized_crop=dict(p=0.0, area=(0.08, 1.0), aspect=(3 / 4, 4 / 3)),
        vflip=False,
        rot90=False,
        rotate=chance(-10.0, 10.0),
        elastic=dict(p=0.0, alpha=10.0, grid=3),
        intensity=chance(0.8, 1.2),
        brightness=chance(-32.0, 32.0),
        contrast=chance(0.5, 1.5),
        saturation=chance(0.5, 1.5),
        hue=chance(-0.05, 0.05),
        gamma=chance(0.7, 1.5),
        blur=chance(0.1, 1.5),
        gaussian_noise=chance(0.0, 8.0),
        poisson_noise=chance(20.0, 200.0),
    ))
