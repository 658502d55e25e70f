"""What the speed benchmarks share: a config's train step compiled for batches of one shape, random batches of
that shape, and the timing of repeated calls.

The step is the one a run trains with: `build_experiment`, `create_train_state` and `steps.train_step`, pmapped
over the local devices with the state donated. Its FLOP count is XLA's cost analysis of the compiled step. Nothing
here reads data from disk or imports TFDS or grain (the GPU suite runs without them).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from seg_jax import tasks
from seg_jax.data.pipeline.detection_targets import batched_instances_to_targets
from seg_jax.train import steps
from seg_jax.train.experiment import build_experiment
from seg_jax.train.state import create_train_state


def time_calls(fn: Callable, args_fn: Callable[[], tuple], *, calls: int,
               max_seconds: float | None = None) -> tuple[float, float]:
    """(seconds of a first call, compilation included; median seconds of up to `calls` further calls).

    Each call waits for `fn`'s outputs (`jax.block_until_ready`); `args_fn()` makes each call's arguments outside
    the timing. The further calls stop once `max_seconds` have passed since the first of them (at least one is
    made), so a slow device cannot overrun a time budget.
    """
    start = time.perf_counter()
    jax.block_until_ready(fn(*args_fn()))
    first = time.perf_counter() - start
    times: list[float] = []
    began = time.perf_counter()
    while len(times) < max(calls, 1):
        args = args_fn()
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
        if max_seconds is not None and time.perf_counter() - began > max_seconds:
            break
    return first, float(np.median(times))


def random_semantic_batch(*, num_devices: int, per_device: int, image_size: tuple[int, int], num_classes: int,
                          seed: int = 0) -> dict[str, np.ndarray]:
    """image float32 [D, b, H, W, 3] (standard normal, as normalised images), label int32 [D, b, H, W] uniform
    in [0, N), weights float32 [D, b, H, W] and mask float32 [D, b], all ones."""
    rng = np.random.default_rng(seed)
    lead = (num_devices, per_device)
    return {"image": rng.normal(size=(*lead, *image_size, 3)).astype(np.float32),
            "label": rng.integers(0, num_classes, size=(*lead, *image_size)).astype(np.int32),
            "weights": np.ones((*lead, *image_size), np.float32), "mask": np.ones(lead, np.float32)}


def random_instances(rng: np.random.Generator, *, image_size: tuple[int, int], count: int,
                     num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(instances int32 [H, W], labels int32 [H, W]): `count` random rectangles, 4 to H/3 (W/3) pixels a side,
    later ones painted over earlier ones; each has a class in [1, N) and its own id (0 = background)."""
    height, width = image_size
    instances = np.zeros(image_size, np.int32)
    labels = np.zeros(image_size, np.int32)
    for index in range(1, count + 1):
        h, w = rng.integers(4, max(height // 3, 5)), rng.integers(4, max(width // 3, 5))
        y, x = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
        instances[y:y + h, x:x + w] = index
        labels[y:y + h, x:x + w] = rng.integers(1, max(num_classes, 2))
    return instances, labels


def random_detection_batch(*, num_devices: int, per_device: int, image_size: tuple[int, int], num_classes: int,
                           max_instances: int, instances_per_image: int = 20,
                           seed: int = 0) -> dict[str, np.ndarray]:
    """image float32 [D, b, H, W, 3] (standard normal) and the detection targets of random rectangles
    (`random_instances`) as the input pipeline's `DetectionTargets` makes them: boxes float32 [D, b, G, 4],
    classes int32 [D, b, G], masks uint8 [D, b, G, H, W], valid bool [D, b, G]; G = max_instances."""
    rng = np.random.default_rng(seed)
    lead = (num_devices, per_device)
    maps = [random_instances(rng, image_size=image_size, count=min(instances_per_image, max_instances),
                             num_classes=num_classes) for _ in range(num_devices * per_device)]
    instances = np.stack([m[0] for m in maps]).reshape(*lead, *image_size)
    labels = np.stack([m[1] for m in maps]).reshape(*lead, *image_size)
    targets = batched_instances_to_targets(instances, labels, max_instances=max_instances)
    return {"image": rng.normal(size=(*lead, *image_size, 3)).astype(np.float32), **targets}


def random_train_batch(config: ml_collections.ConfigDict, *, num_devices: int, image_size: tuple[int, int],
                       num_classes: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A random batch with the keys and shapes the train step of `config`'s task reads, [D, b, ...] with
    b = config.train.batch_size / D (`random_semantic_batch` or `random_detection_batch`)."""
    per_device = int(config.train.batch_size) // num_devices
    if tasks.task_name(config) == "detection":
        return random_detection_batch(num_devices=num_devices, per_device=per_device, image_size=image_size,
                                      num_classes=num_classes, max_instances=int(config.data.max_instances),
                                      seed=seed)
    return random_semantic_batch(num_devices=num_devices, per_device=per_device, image_size=image_size,
                                 num_classes=num_classes, seed=seed)


def to_devices(batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """[D, ...] host arrays → arrays sharded over the local devices as pmap takes them (copied once)."""
    return jax.pmap(lambda tree: tree)(batch)


def flops_of(compiled: Any) -> float | None:
    """XLA's FLOP count of one call of a compiled function (per device for a pmapped one), or None if unknown."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older jax: one dict per program
        analysis = analysis[0] if analysis else None
    flops = (analysis or {}).get("flops")
    return float(flops) if flops is not None and flops > 0 else None


def speed(*, seconds: float, flops: float | None, devices: int, batch: int) -> dict:
    """The JSON fields of one step kind: median `seconds` per step, images/s, and XLA's FLOPs (`flops` per device,
    None if unknown) per step in GFLOP and per second in GFLOP/s."""
    total = None if flops is None else flops * devices
    return {"step_s": round(seconds, 5), "images_per_s": round(batch / seconds, 2),
            "gflop_per_step": None if total is None else round(total / 1e9, 3),
            "gflop_per_s": None if total is None else round(total / seconds / 1e9, 2)}


@dataclasses.dataclass
class CompiledStep:
    """A config's train step compiled for one batch shape.

    Attributes:
        step: (state, batch, rng) → (state, metrics); donates the state, so keep the one it returns.
        state: the replicated train state (leaves [D, ...]); `time_train_step` replaces it with the newest.
        train_keys: the batch keys the step reads (`task.train_keys`).
        flops: XLA's FLOP count of one step on one device, or None.
        compile_seconds: lowering + compilation.
        params: parameter count of the model.
    """

    step: Callable
    state: Any
    train_keys: tuple[str, ...]
    flops: float | None
    compile_seconds: float
    params: int


def compile_train_step(config: ml_collections.ConfigDict, batch: dict[str, Any], *, num_classes: int,
                       image_size: tuple[int, int], seed: int = 0) -> CompiledStep:
    """The train step of `config` (model, loss, optimiser, schedule as a run builds them) compiled for `batch`
    ([D, b, ...] arrays with at least the task's train keys; only their shapes and dtypes matter here)."""
    exp = build_experiment(config, num_classes=num_classes)
    state = create_train_state(init_model=exp.init_model, apply_model=exp.task.model, tx=exp.tx, seed=seed,
                               image_shape=tuple(image_size))
    params = sum(x.size for x in jax.tree_util.tree_leaves(state.params))
    state = steps.replicate(state)
    keys = tuple(exp.task.train_keys)
    step = steps.pmapped_train_step(task=exp.task, learning_rate_fn=exp.learning_rate_fn)
    start = time.perf_counter()
    compiled = step.lower(state, {k: batch[k] for k in keys}, jax.random.PRNGKey(1)).compile()
    seconds = time.perf_counter() - start
    return CompiledStep(step=compiled, state=state, train_keys=keys, flops=flops_of(compiled),
                        compile_seconds=seconds, params=int(params))


def time_train_step(compiled: CompiledStep, batch: dict[str, Any], *, calls: int,
                    max_seconds: float | None = None) -> float:
    """Median seconds of one train step on `batch` (`time_calls`: one untimed call first); the state advances."""
    rng = jax.random.PRNGKey(1)
    inputs = {k: batch[k] for k in compiled.train_keys}

    def call():
        compiled.state, metrics = compiled.step(compiled.state, inputs, rng)
        return compiled.state, metrics

    return time_calls(call, tuple, calls=calls, max_seconds=max_seconds)[1]
