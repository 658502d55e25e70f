"""seg_jax: semantic and instance segmentation in JAX/Flax.

The sub-packages read as the pipeline: data → models → losses → train → metrics → postprocess.
"""
