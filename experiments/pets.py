"""python launch.py --config=experiments/pets.py --workdir=runs/pets

U-Net on Oxford-IIIT Pet (TFDS `oxford_iiit_pet`; trimap: background / pet, border ignored).
TFDS downloads and prepares it on first use (internet needed once); sized for a GPU.
`:tiny` is the test-sized variant (it still names the real dataset, so only the build is tested).
"""
from __future__ import annotations

import ml_collections

from experiments import default
from seg_jax import data


ARGS = (None, "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = default.get_config()
    config.name = "pets"
    config.data = data.base_config("oxford_iiit_pet")
    config.data.train_split = "train[:90%]"
    config.data.eval_split = "train[90%:]"
    config.data.crop_size = (256, 256)
    config.data.eval_size = (384, 384)
    config.model = ml_collections.ConfigDict({"name": "unet", "depth": 4, "base_width": 32, "norm": "batch"})
    config.train.steps = 20_000
    config.train.batch_size = 32
    config.train.log_every = 100
    config.train.eval_every = 2000
    config.train.checkpoint_every = 1000
    config.schedule.warmup_steps = 500
    return default.apply_arg(config, arg)
