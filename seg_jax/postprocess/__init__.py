"""Post-processing of network outputs: instances from semantic probabilities (and a predicted distance map), dense
CRF; the classical Otsu foreground that the model-free baselines feed to the same instance post-processing."""
from __future__ import annotations

from seg_jax.postprocess.crf import CRFLayer, dense_crf
from seg_jax.postprocess.instances import (instance_scores, instances_from_semantic, instances_per_class,
                                           instances_with_scores)
from seg_jax.postprocess.threshold import otsu_probabilities

__all__ = ["CRFLayer", "dense_crf", "instance_scores", "instances_from_semantic", "instances_per_class",
           "instances_with_scores", "otsu_probabilities"]
