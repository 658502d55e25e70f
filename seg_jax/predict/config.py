"""`base_config`: the `predict` section of an experiment config, every key with its default.

Light on purpose (as `seg_jax.data.config`): experiment configs import it without jax. A run trained before this
section existed has none in its `config.json`; `with_defaults` adds it, so `--config.predict.<key>=...` overrides
work on every run.
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

BLENDS = ("gaussian", "linear")
TTA_DEFAULTS = {"flips": False, "scales": (1.0,)}  # off; `seg_jax.predict.tta.tta_options` checks the option


def base_config() -> ml_collections.ConfigDict:
    """The predict settings at their defaults.

    Keys:
        tile_size: pixels, side of the square tiles the model sees (one compiled shape, so memory on the device
            is fixed whatever the image size). A multiple of the model's input multiple (`model.input_multiple`:
            2**depth for U-Net, 32 for FCN, the top stride for Mask R-CNN). An image smaller than a tile is padded
            to one tile (zeros after normalisation, the mean colour, as the models pad their own input).
        overlap: pixels shared by neighbouring tiles (at least; the tiles are spread evenly). For Mask R-CNN it
            must exceed the largest object, so that every object cut by one tile lies whole in a neighbour.
        blend: weights of each tile's logits where tiles overlap: "gaussian" (centre-weighted, sigma =
            `gaussian_sigma` x tile_size) or "linear" (ramps from the tile edge to 1 over `overlap` pixels).
        gaussian_sigma: fraction of tile_size.
        batch_size: tiles per call of the model.
        save_probabilities: also write `<stem>_probabilities.npz` (float32 softmax [H, W, N]); semantic tasks.
        overlay_alpha: opacity of the class colours in `<stem>_overlay.png` (background is left untinted).
        instances: semantic models: the `evals` entry of type "instances" whose post-processing options make
            the instance outputs; None = the first such entry, if any.
        merge_overlap: Mask R-CNN: two detections from different tiles are one object when their masks' overlap,
            as a fraction of the smaller mask, exceeds this; the one not cut by a tile border is kept, then the
            higher score.
        tta: semantic models: test-time augmentation of every tile, `{"flips": bool, "scales": (float, ...)}`
            (`seg_jax.predict.tta`; the same option as an evaluator entry's `tta`); default off.
    """
    return ml_collections.ConfigDict({
        "tile_size": 512,
        "overlap": 64,
        "blend": "gaussian",
        "gaussian_sigma": 0.125,
        "batch_size": 4,
        "save_probabilities": False,
        "overlay_alpha": 0.5,
        "instances": config_dict.placeholder(str),
        "merge_overlap": 0.5,
        "tta": dict(TTA_DEFAULTS),
    })


def with_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with a `predict` section: its own keys over `base_config()` (a run saved before the section)."""
    merged = base_config()
    merged.update(dict(config.get("predict", None) or {}))  # nested sections (tta) are updated key by key
    config.predict = merged
    return config
