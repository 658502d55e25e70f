"""Post-processing of network outputs: instances from semantic probabilities, dense CRF."""
from __future__ import annotations

from seg_jax.postprocess.crf import CRFLayer, dense_crf
from seg_jax.postprocess.instances import (instance_scores, instances_from_semantic, instances_per_class,
                                           instances_with_scores)

__all__ = ["CRFLayer", "dense_crf", "instance_scores", "instances_from_semantic", "instances_per_class",
           "instances_with_scores"]
