"""Prediction with a trained run on images of any size (`python launch.py --mode=predict`).

Modules, in the order an image flows:
    config      the `predict` config section (tile size, overlap, blending, outputs), light to import
    tiling      tile positions, blending weights, the sliding window's blended logits
    detections  Mask R-CNN tiles: detections in image coordinates, merged across overlaps
    predictor   a run restored from its checkpoint, and `predict_image`
    outputs     what is written: palette label PNG, overlay, probabilities, 16-bit instances, COCO JSON
    folder      `predict_folder`: a folder or glob of images, clash check, progress, unreadable files skipped

Public names are imported on first use (PEP 562), so experiment configs import `seg_jax.predict.config` without jax.
"""
from __future__ import annotations

from seg_jax.lazy import exports

_PUBLIC = {
    "PredictError": "seg_jax.predict.folder",
    "PredictReport": "seg_jax.predict.folder",
    "input_files": "seg_jax.predict.folder",
    "predict_folder": "seg_jax.predict.folder",
    "Prediction": "seg_jax.predict.predictor",
    "Predictor": "seg_jax.predict.predictor",
    "initial_predictor": "seg_jax.predict.predictor",
    "load_predictor": "seg_jax.predict.predictor",
    "predict_image": "seg_jax.predict.predictor",
    "run_config": "seg_jax.predict.predictor",
}

__getattr__, __dir__, __all__ = exports(__name__, _PUBLIC)
