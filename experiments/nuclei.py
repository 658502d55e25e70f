"""python launch.py --config=experiments/nuclei.py:border_watershed --workdir=runs/nuclei_border_watershed

Instances from semantic masks on the built-in `nuclei` dataset (touching nuclei, DSB-2018 style):
  ce_cc               plain cross-entropy, instances by connected components (the baseline);
  unet_weights_cc     cross-entropy weighted by the U-Net paper's boundary weight map (w0=10, σ=5 px);
  border_watershed    border-aware 3-class targets (background / interior / border), marker-controlled
                      watershed seeded by interior minus border;
  distance_watershed  background / nucleus cross-entropy plus an L1-regressed distance channel (each nucleus's
                      distance to its outline normalised to [0, 1]); watershed of the negative predicted distance
                      from its h-maxima, inside the foreground mask;
  otsu_cc             classical baseline, no learning: Otsu threshold of the grey level + connected components;
  otsu_watershed      classical baseline: Otsu + watershed of the mask's distance transform from its peaks.
The two Otsu variants train the U-Net for one step only (the loop evaluates a checkpoint); read their
`val_instances` alone, computed by the same evaluator on the same images as the learned methods.

Every variant trains on the generator version 2.0.0 (`seg_jax.data.sources.nuclei_v2`: irregular, textured,
clustered nuclei on uneven background) with the microscopy augmentations of `MICROSCOPY_AUGMENT` (flips, 90°
rotations, elastic deformation, intensity / brightness / contrast / gamma jitter, blur, noise). `OLD_RECIPE` is the
override set of the recipe before them: generator 1.0.0, no augmentation beyond rescale, crop and hflip.
Evaluation reports DSB score, COCO mask AP, PQ and AJI (`val_instances`) beside mIoU (`val`).
Append `,tiny` for tests, `,folder` for your own images (below).

Your own microscopy: convert a folder of images, class PNGs (0 background, 1 nucleus) and 16-bit instance-id PNGs
with `python -m seg_jax.data.folder ... --instances DIR --num_classes 2 --out DATA`, then run any variant with
`--config=experiments/nuclei.py:<variant>,folder --config.data.data_dir=DATA` (add `--config.data.eval_size=(H,W)`
when the validation images differ in size).
"""
from __future__ import annotations

import ml_collections

from experiments import common

# The `data.augment` settings (`seg_jax.data.config.augment_config`) for fluorescence nuclei: all 8 symmetries of
# the square, the U-Net paper's elastic deformation at a magnitude that keeps nuclei convex-ish (3 px on a 3 x 3
# grid), and jitter of exposure, staining and focus the generator's images vary in.
MICROSCOPY_AUGMENT = {
    "vflip": True,
    "rot90": True,
    "elastic": {"p": 0.5, "alpha": 3.0, "grid": 3},
    "intensity": {"p": 0.5, "range": (0.7, 1.3)},
    "brightness": {"p": 0.5, "range": (-16.0, 16.0)},
    "contrast": {"p": 0.5, "range": (0.7, 1.3)},
    "gamma": {"p": 0.5, "range": (0.7, 1.5)},
    "blur": {"p": 0.2, "range": (0.1, 1.2)},
    "gaussian_noise": {"p": 0.2, "range": (0.0, 6.0)},
}
# Study overrides back to the recipe before issue 13 (for domain-shift comparisons): the old generator and no
# augmentation beyond rescale / crop / hflip.
OLD_RECIPE = {"data.version": "1.0.0", "data.augment": common.data_config("nuclei").augment.to_dict()}

VARIANTS = ("ce_cc", "unet_weights_cc", "border_watershed", "distance_watershed", "otsu_cc", "otsu_watershed")
# `variant[,folder][,tiny]`; `,folder` needs a conversion in data.data_dir, so the config test builds the others.
ARGS = VARIANTS + tuple(f"{v},tiny" for v in VARIANTS)
OPTIONS = ("folder", "tiny")


def _parse(arg: str | None) -> tuple[str, set[str]]:
    """`"variant[,folder][,tiny]"` → (variant, options); unknown ones list the valid ones."""
    variant, *options = (arg or "border_watershed").split(",")
    common.split_arg(variant, variants=VARIANTS, default="border_watershed", what="nuclei")
    unknown = [o for o in options if o not in OPTIONS]
    if unknown or len(set(options)) != len(options):
        raise ValueError(f"unknown or repeated option(s) {', '.join(unknown) or ', '.join(options)} in config "
                         f"argument {arg!r}; valid: {', '.join(OPTIONS)}")
    return variant, set(options)


def _instance_options(variant: str) -> dict:
    """`instances_from_semantic` options of each variant's `val_instances` entry."""
    if variant == "border_watershed":
        return {"method": "watershed", "border_index": 2, "markers": "interior", "elevation": "border",
                "marker_threshold": 0.5, "foreground_threshold": 0.5, "min_size": 8}
    if variant == "distance_watershed":
        return {"method": "watershed", "markers": "predicted_distance", "elevation": "predicted_distance",
                "marker_threshold": 0.3, "peak_height": 0.1, "foreground_threshold": 0.5, "min_size": 8}
    if variant == "otsu_watershed":
        return {"method": "watershed", "markers": "distance_peaks", "elevation": "distance", "min_distance": 4,
                "foreground_threshold": 0.5, "min_size": 8}
    return {"method": "connected_components", "foreground_threshold": 0.5, "min_size": 8}


def get_config(arg: str | None = "border_watershed") -> ml_collections.ConfigDict:
    variant, options = _parse(arg)
    config = common.base("nuclei")
    config.name = f"nuclei_{variant}"
    config.data.crop_size = (64, 64)
    config.data.version = "2.0.0"
    for key, value in MICROSCOPY_AUGMENT.items():
        config.data.augment[key] = value if not isinstance(value, dict) else {**config.data.augment[key], **value}
    config.model = common.model({"name": "unet", "depth": 3, "base_width": 16, "norm": "batch"})
    if variant == "unet_weights_cc":
        config.data.weight_map = "unet"
        config.data.weight_map_w0 = 10.0
        config.data.weight_map_sigma = 5.0
    elif variant == "border_watershed":
        config.data.targets = "border"
        config.data.border_width = 2
    elif variant == "distance_watershed":
        config.data.distance_target = "normalized"
        config.loss = ml_collections.ConfigDict({"cross_entropy": 1.0, "distance": {"weight": 1.0, "penalty": "l1"}})
    config.evals.val_instances = {"type": "instances", "every": 750, "batch_size": 32, "num_pictures": 6,
                                  "per_class": False, "options": _instance_options(variant),
                                  "source": "otsu" if variant.startswith("otsu") else "model",
                                  "otsu_foreground": "bright"}
    if "tiny" in options:
        common.shrink_for_tests(config)
        config.model.update(depth=2, base_width=4)
    if "folder" in options:  # the user's conversion (`python -m seg_jax.data.folder`): one version, no variants
        config.data.update(name="folder", version=None, variant="default")
        config.name += "_folder"
    if variant.startswith("otsu"):  # nothing is learnt: one step gives the loop its checkpoint
        config.train.update(steps=1, log_every=1, checkpoint_every=1)
        config.schedule.warmup_steps = 0
        for entry in config.evals.values():
            entry.every = 0
    return config
