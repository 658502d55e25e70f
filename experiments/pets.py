"""python launch.py --config=experiments/pets.py --workdir=runs/pets

U-Net on Oxford-IIIT Pet (TFDS `oxford_iiit_pet`; trimap: background / pet, border ignored).
TFDS downloads and prepares it on first use (internet needed once); sized for a GPU.
`:tiny` is the test-sized variant (it still names the real dataset, so only the build is tested).
"""
from __future__ import annotations

import ml_collections

from experiments import common

ARGS = (None, "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg not in (None, "", "tiny"):
        raise ValueError(f"unknown config argument {arg!r}; valid: 'tiny'")
    config = common.base("oxford_iiit_pet")
    config.name = "pets"
    config.data.train_split = "train[:90%]"
    config.data.eval_split = "train[90%:]"
    config.data.crop_size = (256, 256)
    config.data.eval_size = (384, 384)
    config.model = common.model({"name": "unet", "depth": 4, "base_width": 32, "norm": "batch"})
    config.loss = ml_collections.ConfigDict({"cross_entropy": 1.0, "dice": {"weight": 1.0, "eps": 1e-6}})
    config.train.update(steps=20_000, batch_size=32, log_every=100, checkpoint_every=1000)
    config.evals.val.every = 2000
    config.schedule.warmup_steps = 500
    if arg == "tiny":
        common.shrink_for_tests(config)
        config.model.update(depth=2, base_width=4)
    return config
