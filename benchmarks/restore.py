"""What evaluation, tuning and prediction spend on the state a checkpoint is restored into: `restore_target`
(`jax.eval_shape` of the initialisation, host zeros) against `create_train_state` (the initialisation compiled and
run, which they used before).

    python -m benchmarks.restore                                       # the four configs of --configs' default
    python -m benchmarks.restore --configs=experiments/mask_rcnn.py:coco

Prints one JSON line per config: seconds of each, in one process without the persistent compilation cache (what a
first `--mode=eval` pays), `restore_target` first so that it does not profit from the other's tracing.
"""
from __future__ import annotations

import json
import time

import jax
from absl import app, flags

from seg_jax.studies.spec import load_config
from seg_jax.train.experiment import build_experiment
from seg_jax.train.state import create_train_state, restore_target

_CONFIGS = flags.DEFINE_list("configs", ["experiments/default.py", "experiments/fcn.py:fcn8s",
                                         "experiments/mask_rcnn.py:shapes", "experiments/cityscapes.py:unet"],
                             "Experiment config files[:arg].")
_CLASSES = flags.DEFINE_integer("classes", 6, "Number of classes.")


def bench(spec: str, *, num_classes: int = 6) -> dict:
    config = load_config(spec)
    exp = build_experiment(config, num_classes=num_classes)
    options = dict(init_model=exp.init_model, apply_model=exp.task.model, tx=exp.tx,
                   image_shape=tuple(config.data.crop_size))
    start = time.perf_counter()
    target = restore_target(**options)
    target_s = time.perf_counter() - start
    start = time.perf_counter()
    state = jax.block_until_ready(create_train_state(seed=int(config.seed), **options))
    create_s = time.perf_counter() - start
    return {"config": spec, "model": config.model.name, "crop_size": list(config.data.crop_size),
            "leaves": len(jax.tree.leaves(target)), "initialised_leaves": len(jax.tree.leaves(state)),
            "restore_target_s": round(target_s, 3), "create_train_state_s": round(create_s, 3),
            "device_kind": jax.devices()[0].device_kind}


def main(argv):
    del argv
    for spec in _CONFIGS.value:
        print(json.dumps(bench(spec, num_classes=_CLASSES.value)), flush=True)


if __name__ == "__main__":
    app.run(main)
