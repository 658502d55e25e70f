"""Compile time, steady-state images/s and achieved GFLOP/s of the pmapped train step and the semantic evaluator's
eval step.

    python -m benchmarks.train_step --configs=experiments/default.py,experiments/fcn.py:fcn8s --size=128
    python -m benchmarks.train_step --configs=experiments/cityscapes.py:unet,experiments/cityscapes.py:fcn8s

Prints one JSON line per (config, step kind). Models, losses and optimisers are built by the experiment code from
each config (`file[:arg]`), exactly as a run builds them (`benchmarks.step_timing.compile_train_step`); inputs are
random images and labels of the given size, so the data pipeline is not measured. `gflop_per_step` is XLA's
cost-analysis FLOP count of the compiled step over all devices (`step_timing.flops_of`; None where the backend
gives none) and `gflop_per_s` that count over the median step time.
"""
from __future__ import annotations

import json
import os
import resource
import time

import jax
from absl import app, flags

from benchmarks.step_timing import (compile_train_step, flops_of, random_semantic_batch, speed, time_calls,
                                    time_train_step)
from seg_jax import evaluators, tasks
from seg_jax.studies.spec import load_config
from seg_jax.train import steps

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
    hw = (_SIZE.value, _SIZE.value)
    config.train.batch_size = _BATCH.value
    if tasks.task_name(config) != "semantic":
        raise app.UsageError(f"{spec}: this benchmark times semantic models; {config.model.name} is "
                             f"{tasks.task_name(config)!r}")
    batch = random_semantic_batch(num_devices=d, per_device=_BATCH.value // d, image_size=hw,
                                  num_classes=_CLASSES.value)
    train = compile_train_step(config, batch, num_classes=_CLASSES.value, image_size=hw)
    common = {"config": spec, "model": config.model.name, "size": _SIZE.value, "batch": _BATCH.value, "devices": d,
              "dtype": _DTYPE.value, "params": train.params, "device_kind": jax.devices()[0].device_kind,
              "loss": config.loss.to_dict()}
    before = resource.getrusage(resource.RUSAGE_SELF)
    seconds = time_train_step(train, batch, calls=_STEPS.value)
    after, calls = resource.getrusage(resource.RUSAGE_SELF), _STEPS.value + 1  # + the untimed first call
    # Page faults and kernel time per step: XLA:CPU's fresh buffers fault on every step without huge pages
    # (seg_jax.entry; GLIBC_TUNABLES shows whether this process has them).
    out = [{**common, "step": "train", "compile_s": round(train.compile_seconds, 3),
            **speed(seconds=seconds, flops=train.flops, devices=d, batch=_BATCH.value),
            "page_faults_per_step": round((after.ru_minflt - before.ru_minflt) / calls),
            "kernel_s_per_step": round((after.ru_stime - before.ru_stime) / calls, 4),
            "glibc_tunables": os.environ.get("GLIBC_TUNABLES")}]

    from seg_jax.train.experiment import build_experiment
    task = build_experiment(config, num_classes=_CLASSES.value).task
    class_names = tuple(f"class_{i}" for i in range(_CLASSES.value))
    evaluator = evaluators.SemanticEvaluator("val", {"type": "semantic"}, task=task, class_names=class_names,
                                             data_cfg=config.data)
    eval_batch = {k: batch[k] for k in ("image", "label", "mask")}
    start = time.perf_counter()
    eval_fn = jax.pmap(evaluator.device_fn, axis_name=steps.AXIS).lower(train.state, eval_batch).compile()
    compile_s = time.perf_counter() - start
    _, seconds = time_calls(lambda b_: eval_fn(train.state, b_)["confusion"], lambda: (eval_batch,),
                            calls=_STEPS.value)
    out.append({**common, "step": "eval", "compile_s": round(compile_s, 3),
                **speed(seconds=seconds, flops=flops_of(eval_fn), devices=d, batch=_BATCH.value)})
    return out


def main(argv):
    del argv
    for spec in _CONFIGS.value:
        for line in bench(spec):
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    app.run(main)
