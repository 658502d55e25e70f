"""The GPU suite: train-step speed of the paper-sized models and dense-CRF speed, for one lease of one GPU.

    bash benchmarks/gpu_suite.sh                      # on the GPU machine: installs benchmarks/wheels, runs it all
    python -m benchmarks.gpu_suite --smoke            # every item at tiny sizes on the CPU (well under a minute)
    python -m benchmarks.gpu_suite --items=jax_unet_bf16,crf_512x512 --budget_s=120

Items (`ITEMS`, run in this order, each printing JSON lines that start with its name under "item"):
  device            the accelerator, jax version and the card's theoretical dense peaks (`PEAK_TFLOPS`)
  jax_<model>_<dtype>  images/s and achieved TFLOP/s of the train step of U-Net (experiments/cityscapes.py:unet,
                    depth 4, width 64) and FCN-8s (cityscapes.py:fcn8s, full VGG-16) at 512² with 19 classes and
                    Mask R-CNN (experiments/mask_rcnn.py:coco; its backbone is ResNet depths 2,2,2,2 of basic
                    blocks, i.e. R18-FPN-sized, not R50) at 800² with 81 classes, in float32 and bfloat16
                    (`config.model.dtype`); batch = the config's train.batch_size (16); random inputs
                    (`benchmarks.step_timing`). TFLOP/s = XLA's cost-analysis FLOPs of the compiled step / median
                    step seconds; float32 rows are compared with the TF32 peak (XLA's default precision runs float32
                    convolutions on TF32 tensor cores), bfloat16 rows with the bfloat16 one.
  crf_<H>x<W>       `seg_jax.postprocess.dense_crf` (grid, 40-px cells, 16 modes: the default) on the device at
                    512×512 and 1024×2048 with 19 classes, 5 iterations, on benchmarks/crf.py's scene; then
                    pydensecrf on this machine's CPU (one core) when importable, with the labels' agreement.
  torch_<model>_<mode>  the same U-Net and FCN-8s as PyTorch mirrors (`benchmarks.torch_mirror`, stepped by
                    `benchmarks.torch_step`), eager and
                    `torch.compile`, float32 (TF32 allowed, as XLA) and bfloat16 autocast; skipped (a JSON line
                    says why) when torch is not importable or has no CUDA device outside --smoke.
  summary           (printed by the driver at the end) torch / jax images/s and pydensecrf / seg_jax seconds.

Every item runs in its own Python process (--isolate, the default): a crash, an out-of-memory error or a hang
ends that item only, with a line {"item": ..., "error": ...}, and the rest go on. Its time guard is its own limit
(`Item.limit_s`), cut to what is left of --budget_s for the whole suite (items the budget cannot reach print
{"item": ..., "skipped": ...}); inside an item the timed calls stop after --measure_s. --noisolate runs the items
in this process (errors are still caught per item, but nothing can stop a hung one). --smoke runs every item at
tiny sizes on the CPU with XLA's backend optimisation off and torch.compile's `eager` backend (dynamo tracing
without code generation), so the whole suite runs in well under a minute; its numbers mean nothing.

The GPU machine has no TFDS, grain or internet; the suite needs neither datasets nor grain, and
benchmarks/gpu_suite.sh installs ml_collections (and pydensecrf) from benchmarks/wheels (see there).
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import os
import subprocess
import sys
import threading
import time
from typing import Callable, Iterator

from absl import app, flags

# Theoretical dense peaks in TFLOP/s (NVIDIA's data sheets; the sparse figures are twice these), by a substring of
# the device kind, most specific first. The H200 has the H100 SXM's tensor cores.
PEAK_TFLOPS = (
    ("H200", {"bfloat16": 989.4, "tf32": 494.7, "float32": 66.9}),
    ("H100 PCIe", {"bfloat16": 756.0, "tf32": 378.0, "float32": 51.2}),
    ("H100", {"bfloat16": 989.4, "tf32": 494.7, "float32": 66.9}),
    ("A100", {"bfloat16": 312.0, "tf32": 156.0, "float32": 19.5}),
)
# The peak a compute dtype's convolutions run at under XLA's default precision.
PEAK_OF_DTYPE = {"bfloat16": "bfloat16", "float32": "tf32"}
CRF_SETTING = "grid40k16"  # dense_crf's default: method="grid", 40-px cells (80 px bilateral_sxy), 16 modes


def peak_tflops(device_kind: str) -> dict[str, float] | None:
    """The dense peaks (TFLOP/s by "bfloat16", "tf32", "float32") of a device kind such as "NVIDIA H100 80GB
    HBM3", or None for a device not in `PEAK_TFLOPS` (a CPU)."""
    for name, peaks in PEAK_TFLOPS:
        if name.lower() in device_kind.lower():
            return dict(peaks)
    return None


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The problem sizes of the items: the real ones, or the smoke test's tiny ones."""

    smoke: bool
    semantic_size: int        # pixels, square
    semantic_classes: int
    detection_size: int       # pixels, square
    detection_classes: int    # including background
    batch: int | None         # None: each config's train.batch_size
    crf_sizes: dict[str, tuple[int, int]]  # item suffix → (height, width) pixels
    crf_classes: int
    calls: int                # most timed calls per measurement
    measure_s: float          # seconds of timed calls per measurement, at most (after the one that compiles)


def sizes_for(*, smoke: bool, measure_s: float = 5.0) -> Sizes:
    if smoke:
        return Sizes(smoke=True, semantic_size=32, semantic_classes=3, detection_size=32, detection_classes=3,
                     batch=2, crf_sizes={"512x512": (24, 24), "1024x2048": (24, 48)}, crf_classes=3, calls=2,
                     measure_s=measure_s)
    return Sizes(smoke=False, semantic_size=512, semantic_classes=19, detection_size=800, detection_classes=81,
                 batch=None, crf_sizes={"512x512": (512, 512), "1024x2048": (1024, 2048)}, crf_classes=19,
                 calls=30, measure_s=measure_s)


_ITEMS = flags.DEFINE_list("items", None, "Items to run, in suite order (default: all; see ITEMS).")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny sizes on the CPU: checks that every item runs, measures nothing.")
_ISOLATE = flags.DEFINE_bool("isolate", True, "Run each item in its own Python process, under its time limit.")
_BUDGET_S = flags.DEFINE_float("budget_s", 450.0, "Wall-clock seconds for all items together (the shell script's "
                               "pip step comes on top); an item's limit is cut to what is left.")
_MEASURE_S = flags.DEFINE_float("measure_s", 5.0, "Seconds of timed calls per measurement, after the first call.")
_CHILD = flags.DEFINE_string("child", None, "Internal (--isolate): run this one item in this process.")


def why_not_importable(module: str) -> str | None:
    """None when `module` imports, else why not (missing, or a broken install's error)."""
    try:
        importlib.import_module(module)
    except Exception as e:  # ImportError, or e.g. an OSError from a library the module loads
        return f"{module} is not importable: {type(e).__name__}: {e}"[:500]
    return None


def _device_lines(sizes: Sizes) -> Iterator[dict]:
    import jax

    kind = jax.devices()[0].device_kind
    peaks = peak_tflops(kind)
    yield {"device_kind": kind, "platform": jax.devices()[0].platform, "devices": jax.local_device_count(),
           "jax": jax.__version__, "python": sys.version.split()[0], "cpu_count": os.cpu_count(),
           "peak_tflop_per_s": peaks, "peak_note": None if peaks else "not a card in PEAK_TFLOPS: no fraction of peak"}


def _jax_train_lines(sizes: Sizes, *, spec: str, dtype: str) -> Iterator[dict]:
    import jax

    from benchmarks import step_timing
    from seg_jax import tasks
    from seg_jax.studies.spec import load_config

    config = load_config(spec + (",tiny" if sizes.smoke else ""))
    config.model.dtype = dtype
    detection = tasks.task_name(config) == "detection"
    size = sizes.detection_size if detection else sizes.semantic_size
    classes = sizes.detection_classes if detection else sizes.semantic_classes
    if sizes.batch is not None:
        config.train.batch_size = sizes.batch
    config.data.crop_size = (size, size)
    devices = jax.local_device_count()
    batch = step_timing.to_devices(step_timing.random_train_batch(config, num_devices=devices,
                                                                  image_size=(size, size), num_classes=classes))
    compiled = step_timing.compile_train_step(config, batch, num_classes=classes, image_size=(size, size))
    seconds = step_timing.time_train_step(compiled, batch, calls=sizes.calls, max_seconds=sizes.measure_s)
    images = int(config.train.batch_size)
    kind = jax.devices()[0].device_kind
    tflops = None if compiled.flops is None else compiled.flops * devices / seconds / 1e12
    peak = (peak_tflops(kind) or {}).get(PEAK_OF_DTYPE[dtype])
    stats = jax.devices()[0].memory_stats() or {}
    yield {"framework": "jax", "model": config.model.name, "config": spec, "dtype": dtype, "size": size,
           "batch": images, "classes": classes, "devices": devices, "device_kind": kind, "params": compiled.params,
           "compile_s": round(compiled.compile_seconds, 2), "step_s": seconds, "images_per_s": images / seconds,
           "gflop_per_step": None if compiled.flops is None else compiled.flops * devices / 1e9,
           "tflop_per_s": tflops, "peak_tflop_per_s": peak, "peak_kind": PEAK_OF_DTYPE[dtype],
           "fraction_of_peak": None if tflops is None or not peak else tflops / peak,
           "device_peak_gib": stats["peak_bytes_in_use"] / 2 ** 30 if "peak_bytes_in_use" in stats else None}


def _crf_lines(sizes: Sizes, *, name: str) -> Iterator[dict]:
    import jax
    import numpy as np

    from benchmarks import crf as crf_bench

    height, width = sizes.crf_sizes[name]
    image, logits, labels = crf_bench.synthetic_scene(height, width, classes=sizes.crf_classes, seed=0)
    common = {"size": f"{height}x{width}", "classes": sizes.crf_classes, "iterations": 5}
    q, result = crf_bench.measure(CRF_SETTING, image, logits, iterations=5, bilateral_sxy=80.0, repeats=2)
    ours = q.argmax(-1)
    yield {**common, "method": f"seg_jax {CRF_SETTING}", "device_kind": jax.devices()[0].device_kind, **result,
           "megapixels_per_s": height * width / 1e6 / result["seconds_per_image"],
           "accuracy": float(np.mean(ours == labels))}
    missing = why_not_importable("pydensecrf.densecrf")
    if missing:
        yield {**common, "method": "pydensecrf", "skipped": f"{missing} (pip install pydensecrf2, or bring its wheel "
               "in benchmarks/wheels)"}
        return
    runs = [crf_bench.pydensecrf_reference(image, logits, iterations=5, bilateral_sxy=80.0) for _ in range(2)]
    seconds = min(s for _, s in runs)
    yield {**common, "method": "pydensecrf", "device_kind": "cpu (one core)", "seconds_per_image": seconds,
           "megapixels_per_s": height * width / 1e6 / seconds,
           "accuracy": float(np.mean(runs[0][0].argmax(-1) == labels)),
           "agree_seg_jax": float(np.mean(runs[0][0].argmax(-1) == ours)),
           "seg_jax_speedup": seconds / result["seconds_per_image"]}


def _torch_lines(sizes: Sizes, *, spec: str, compiled: bool) -> Iterator[dict]:
    missing = why_not_importable("torch")
    if missing:
        yield {"skipped": missing}
        return
    from benchmarks import torch_step

    yield from torch_step.train_lines(spec + (",tiny" if sizes.smoke else ""), size=sizes.semantic_size,
                                      classes=sizes.semantic_classes, batch=sizes.batch, compiled=compiled,
                                      smoke=sizes.smoke, calls=sizes.calls, max_seconds=sizes.measure_s)


@dataclasses.dataclass(frozen=True)
class Item:
    lines: Callable[[Sizes], Iterator[dict]]  # the item's JSON lines (without "item")
    limit_s: float                            # its time guard at full size, seconds
    smoke_limit_s: float = 90.0


_CITYSCAPES = {"unet": "experiments/cityscapes.py:unet", "fcn8s": "experiments/cityscapes.py:fcn8s"}
ITEMS: dict[str, Item] = {"device": Item(_device_lines, limit_s=30)}
for _model, _spec, _limit in (("unet", _CITYSCAPES["unet"], 75), ("fcn8s", _CITYSCAPES["fcn8s"], 75),
                              ("mask_rcnn", "experiments/mask_rcnn.py:coco", 150)):
    for _dtype, _short in (("float32", "fp32"), ("bfloat16", "bf16")):
        ITEMS[f"jax_{_model}_{_short}"] = Item(functools.partial(_jax_train_lines, spec=_spec, dtype=_dtype),
                                               limit_s=_limit)
ITEMS["crf_512x512"] = Item(functools.partial(_crf_lines, name="512x512"), limit_s=60)
ITEMS["crf_1024x2048"] = Item(functools.partial(_crf_lines, name="1024x2048"), limit_s=120)
for _mode, _limit in (("eager", 60), ("compile", 150)):
    for _model in ("unet", "fcn8s"):
        ITEMS[f"torch_{_model}_{_mode}"] = Item(
            functools.partial(_torch_lines, spec=_CITYSCAPES[_model], compiled=_mode == "compile"), limit_s=_limit)


def _dump(line: dict) -> str:
    return json.dumps(line, default=float)


def run_item_here(name: str, sizes: Sizes, emit: Callable[[dict], None]) -> None:
    """Runs item `name` in this process, emitting its lines; an exception becomes one error line."""
    try:
        for line in ITEMS[name].lines(sizes):
            emit({"item": name, **({"smoke": True} if sizes.smoke else {}), **line})
    except Exception as e:  # one item's failure must not end the suite
        emit({"item": name, "error": f"{type(e).__name__}: {e}"[:2000]})


def run_isolated(command: list[str], *, timeout_s: float, emit: Callable[[str], None],
                 env: dict | None = None) -> str | None:
    """Runs `command`, passing each stdout line to `emit` as it comes; stops it after `timeout_s` seconds.

    Returns None when it exited with status 0, else why not ("timed out after N s", or the exit status and the
    end of its stderr).
    """
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               start_new_session=True)  # its own process group: a timeout ends its children too
    stderr: list[str] = []
    readers = [threading.Thread(target=lambda: [emit(line.rstrip("\n")) for line in process.stdout], daemon=True),
               threading.Thread(target=lambda: stderr.extend(process.stderr), daemon=True)]
    for reader in readers:
        reader.start()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()
        for reader in readers:
            reader.join(timeout=5)
        return f"timed out after {timeout_s:.0f} s"
    for reader in readers:
        reader.join(timeout=5)
    if process.returncode:
        tail = "".join(stderr)[-1500:].strip()
        return f"exit status {process.returncode}: {tail}"
    return None


def summarise(rows: list[dict]) -> list[dict]:
    """Summary lines from the items' lines: per (model, dtype), torch images/s against jax's (and torch's TFLOP/s
    by XLA's FLOP count of the same network's step, when batch and size agree); per CRF size, pydensecrf's seconds
    against seg_jax's."""
    out = []
    jax_rows = {(r["model"], r["dtype"]): r for r in rows if r.get("framework") == "jax" and "images_per_s" in r}
    for row in rows:
        if row.get("framework") != "torch" or "images_per_s" not in row:
            continue
        ours = jax_rows.get((row["model"], row["dtype"]))
        line = {"item": "summary", "compare": f"torch {row['mode']} / jax", "model": row["model"],
                "dtype": row["dtype"], "torch_images_per_s": row["images_per_s"],
                "jax_images_per_s": ours["images_per_s"] if ours else None,
                "ratio": row["images_per_s"] / ours["images_per_s"] if ours else None}
        if ours and ours.get("gflop_per_step") and (ours["batch"], ours["size"]) == (row["batch"], row["size"]):
            line["torch_tflop_per_s_xla_count"] = ours["gflop_per_step"] / ours["batch"] * row["images_per_s"] / 1e3
        out.append(line)
    crf = {(r["item"], r["method"]): r for r in rows if "method" in r and "seconds_per_image" in r}
    for (item, method), row in crf.items():
        reference = crf.get((item, "pydensecrf"))
        if method != "pydensecrf" and reference:
            out.append({"item": "summary", "compare": "pydensecrf cpu / seg_jax seconds", "size": row["size"],
                        "ratio": reference["seconds_per_image"] / row["seconds_per_image"]})
    return out


def _child_command(name: str, sizes: Sizes) -> list[str]:
    command = [sys.executable, "-m", "benchmarks.gpu_suite", f"--child={name}", f"--measure_s={sizes.measure_s}"]
    return command + (["--smoke"] if sizes.smoke else [])


def run_suite(names: list[str], *, sizes: Sizes, isolate: bool, budget_s: float,
              emit: Callable[[str], None]) -> list[dict]:
    """Runs the items `names` in order within `budget_s` seconds, emitting every line; returns the lines parsed."""
    rows: list[dict] = []

    def collect(text: str) -> None:
        emit(text)
        try:
            line = json.loads(text)
        except ValueError:  # a library's stray print
            return
        if isinstance(line, dict):
            rows.append(line)

    deadline = time.monotonic() + budget_s
    for name in names:
        left = deadline - time.monotonic()
        limit = min(ITEMS[name].smoke_limit_s if sizes.smoke else ITEMS[name].limit_s, left)
        if limit < 5:
            collect(_dump({"item": name, "skipped": f"the suite's --budget_s={budget_s:g} is spent"}))
            continue
        if not isolate:
            run_item_here(name, sizes, lambda line: collect(_dump(line)))
            continue
        error = run_isolated(_child_command(name, sizes), timeout_s=limit, emit=collect)
        if error:
            collect(_dump({"item": name, "error": error}))
    for line in summarise(rows):
        collect(_dump(line))
    return rows


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _SMOKE.value:  # tiny programs: compile fast, run on the CPU
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
        os.environ["JAX_PLATFORMS"] = "cpu"
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    sizes = sizes_for(smoke=_SMOKE.value, measure_s=_MEASURE_S.value)
    if _CHILD.value:
        run_item_here(_CHILD.value, sizes, lambda line: print(_dump(line), flush=True))
        return
    names = list(_ITEMS.value or ITEMS)
    unknown = [n for n in names if n not in ITEMS]
    if unknown:
        raise app.UsageError(f"unknown --items {unknown}; valid: {', '.join(ITEMS)}")
    run_suite(names, sizes=sizes, isolate=_ISOLATE.value, budget_s=_BUDGET_S.value,
              emit=lambda text: print(text, flush=True))


if __name__ == "__main__":
    app.run(main)
