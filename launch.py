"""Trains, evaluates, predicts with, tunes or exports an experiment, or runs a study: `seg_jax.cli.run` (through
`seg_jax.entry`, which sets the allocator up first), the same program as the installed `seg-jax` command
(`seg-jax train` = `python launch.py`; commands and flags are listed there and by --help).

    python launch.py                                      # default experiment: U-Net on `shapes`
    python launch.py --config=experiments/fcn.py:fcn8s --workdir=runs/fcn8s --config.train.steps=2000
    python launch.py --workdir=runs/fcn8s --mode=eval       # with the run's own config.json
    python launch.py --workdir=runs/fcn8s --mode=predict --input=photos/ --output=runs/fcn8s/predicted
    python launch.py --workdir=runs/default_crf --mode=tune  # search the CRF on validation; eval/predict use it
    python launch.py --workdir=runs/fcn8s --mode=export --output=runs/fcn8s/exported  # jax.export, no model code
    python launch.py --config=experiments/nuclei.py:ce_cc --mode=check_data  # scan the data, train nothing
    python launch.py --study=experiments/studies/imbalance.py --workdir=runs/studies/imbalance  # arms x seeds
"""
from seg_jax.entry import run

if __name__ == "__main__":
    run()
