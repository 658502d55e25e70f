"""Compile time and steady-state images/s of the pmapped train step and the semantic evaluator's eval step.

    python -m benchmarks.train_step --configs=experiments/default.py,experiments/fcn.py:fcn8s --size=128
    python -m benchmarks.train_step --configs=experiments/cityscapes.py:unet,experiments/cityscapes.py:fcn8s

Prints one JSON line per (config, step kind). Models, losses and optimisers are built by the experiment code from
each config (`file[:arg]`), exactly as a run builds them; inputs are random images and labels of the given size, so
the data pipeline is not measured.
"""
from __future__ import annotations

import json

import jax
from absl import app, flags

from benchmarks.step_timing import random_semantic_batch, time_calls
from seg_jax import evaluators
from seg_jax.studies.spec import load_config
from seg_jax.train import steps
from seg_jax.train.experiment import build_experiment
from seg_jax.train.state import create_train_state

_CONFIGS = flags.DEFINE_list("configs", ["experiments/default.py", "experiments/fcn.py:fcn8s"],
                             "Experiment config files[:arg].")
_SIZE = flags.DEFINE_integer("size", 128, "Square image size in pixels.")
_BATCH = flags.DEFINE_integer("batch", 8, "Global batch size (split over local devices).")
_CLASSES = flags.DEFINE_integer("classes", 6, "Number of classes.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps after the warm-up step.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype of the model.")


def bench(spec: str) -> list[dict]:
    config = load_config(spec)
    config.model.dtype = _DTYPE.value
    d = jax.local_device_count()
    b = _BATCH.value // d
    hw = (_SIZE.value, _SIZE.value)
    config.train.batch_size = _BATCH.value
    exp = build_experiment(config, num_classes=_CLASSES.value)
    if exp.task.name != "semantic":
        raise app.UsageError(f"{spec}: this benchmark times semantic models; {config.model.name} is "
                             f"{exp.task.name!r}")
    state = create_train_state(init_model=exp.init_model, apply_model=exp.task.model, tx=exp.tx, seed=0,
                               image_shape=hw)
    params = sum(x.size for x in jax.tree_util.tree_leaves(state.params))
    state = steps.replicate(state)
    batch = random_semantic_batch(num_devices=d, per_device=b, image_size=hw, num_classes=_CLASSES.value)
    train_fn = steps.pmapped_train_step(task=exp.task, learning_rate_fn=exp.learning_rate_fn)
    class_names = tuple(f"class_{i}" for i in range(_CLASSES.value))
    evaluator = evaluators.SemanticEvaluator("val", {"type": "semantic"}, task=exp.task, class_names=class_names,
                                             data_cfg=config.data)
    eval_fn = jax.pmap(evaluator.device_fn, axis_name=steps.AXIS)
    holder = {"state": state}

    def train_once(batch):
        holder["state"], m = train_fn(holder["state"], batch, jax.random.PRNGKey(1))
        return m

    common = {"config": spec, "model": config.model.name, "size": _SIZE.value, "batch": _BATCH.value, "devices": d,
              "dtype": _DTYPE.value, "params": int(params), "device_kind": jax.devices()[0].device_kind,
              "loss": config.loss.to_dict()}
    out = []
    first, median = time_calls(train_once, lambda: ({k: batch[k] for k in exp.task.train_keys},), calls=_STEPS.value)
    out.append({**common, "step": "train", "compile_s": round(first - median, 3), "step_s": round(median, 5),
                "images_per_s": round(_BATCH.value / median, 2)})
    eval_batch = {k: batch[k] for k in ("image", "label", "mask")}
    first, median = time_calls(lambda b_: eval_fn(holder["state"], b_)["confusion"], lambda: (eval_batch,),
                               calls=_STEPS.value)
    out.append({**common, "step": "eval", "compile_s": round(first - median, 3), "step_s": round(median, 5),
                "images_per_s": round(_BATCH.value / median, 2)})
    return out


def main(argv):
    del argv
    for spec in _CONFIGS.value:
        for line in bench(spec):
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    app.run(main)
