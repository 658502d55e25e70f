"""Study files: each `get_study(arg=None)` returns a study (`seg_jax.studies.spec`); run with launch.py --study."""
