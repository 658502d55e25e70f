"""`python -m seg_jax <command> ...`: the `seg-jax` command without installing its script (`seg_jax.cli`)."""
from seg_jax.entry import run

run()
