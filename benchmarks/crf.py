"""Time, peak memory and quality of `seg_jax.postprocess.crf.dense_crf` next to pydensecrf (C++).

    python -m benchmarks.crf                                   # 512×512 and 1024×2048, 19 classes, 5 iterations
    python -m benchmarks.crf --sizes=128x128 --settings=exact,grid16k16 --bilateral_sxy=20
    python -m benchmarks.crf --no-reference                    # e.g. on a GPU machine without pydensecrf
    python -m benchmarks.crf --sizes=512x512 --exact_max_pixels=262144 --exact_labels=runs/crf_exact  # + exact

Each image is a scene from `skimage.data` resized to the size, with labels from a Felzenszwalb segmentation
(segment id mod classes) and logits that mimic a network's output: one-hot labels averaged over 8×8 blocks, noised,
upsampled bilinearly. Prints one JSON line per measurement and a summary table; `plain_call_seconds` times
`dense_crf` called as a user calls it, without a `jax.jit` around it (it compiles itself). Quality is the fraction of pixels
whose argmax label agrees with pydensecrf's and with the exact dense CRF's (computed when the image has at most
--exact_max_pixels pixels), and the accuracy against the synthetic labels. Peak memory is XLA's
`memory_analysis()` of the compiled function (arguments + outputs + temporaries), which works on CPU and GPU; on a
GPU the device's `peak_bytes_in_use` is reported too (the process's running peak, so it never goes down). The
reference needs `pip install pydensecrf2` (a benchmark-only dependency).
"""
from __future__ import annotations

import functools
import json
import pathlib
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import skimage.data
import skimage.segmentation
import skimage.transform
from absl import app, flags

from seg_jax.postprocess.crf import dense_crf

_SIZES = flags.DEFINE_list("sizes", ["512x512", "1024x2048"], "Image sizes HxW in pixels.")
_SETTINGS = flags.DEFINE_list(
    "settings", ["grid40k16", "grid32k16", "grid48k16", "grid40k8"],
    "'exact', or 'grid<downsample>k<modes>' for method='grid' with that cell size (pixels) and clusters per cell.")
_NO_REFERENCE = flags.DEFINE_bool("no-reference", False, "Skip pydensecrf.")
_CLASSES = flags.DEFINE_integer("classes", 19, "Number of classes N.")
_ITERATIONS = flags.DEFINE_integer("iterations", 5, "Mean-field iterations.")
_BILATERAL_SXY = flags.DEFINE_float("bilateral_sxy", 80.0, "Appearance kernel std in pixels (pydensecrf's sxy).")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed runs (after the compiling one, for ours); the fastest counts, "
                                               "for pydensecrf too.")
_EXACT_MAX_PIXELS = flags.DEFINE_integer("exact_max_pixels", 128 * 128,
                                         "Largest H·W at which the O((HW)²) exact CRF runs as the quality reference.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the logits' noise.")
_EXACT_LABELS = flags.DEFINE_string(
    "exact_labels", None, "Directory that keeps the exact CRF's labels per scene and parameters: read when present "
    "(no --exact_max_pixels limit then), written after computing (the exact pass takes ~20 min at 512² on a CPU).")

CRF_PARAMS = dict(gaussian_sxy=3.0, gaussian_compat=3.0, bilateral_srgb=13.0, bilateral_compat=10.0)
LOGIT_SCALE, LOGIT_NOISE, LOGIT_BLOCK = 4.0, 0.15, 8  # a confident but coarse (stride-8) network output


def synthetic_scene(height: int, width: int, *, classes: int, seed: int):
    """(image [H, W, 3] uint8, logits [H, W, N] float32, labels [H, W] int) for one test scene."""
    source = skimage.data.coffee() if width > height else skimage.data.astronaut()
    image = (skimage.transform.resize(source, (height, width), anti_aliasing=True) * 255).astype(np.uint8)
    segments = skimage.segmentation.felzenszwalb(image, scale=1000, sigma=1.0, min_size=height * width // 400)
    labels = segments % classes
    one_hot = np.eye(classes, dtype=np.float32)[labels]
    blocks = -(-height // LOGIT_BLOCK), -(-width // LOGIT_BLOCK)
    coarse = np.asarray(jax.image.resize(one_hot, (*blocks, classes), "linear"))
    coarse = coarse + LOGIT_NOISE * np.random.default_rng(seed).normal(size=coarse.shape)
    logits = LOGIT_SCALE * np.asarray(jax.image.resize(coarse, (height, width, classes), "linear"))
    return image, logits.astype(np.float32), labels


def pydensecrf_reference(image: np.ndarray, logits: np.ndarray, *, iterations: int, bilateral_sxy: float,
                         gaussian_sxy: float = CRF_PARAMS["gaussian_sxy"],
                         gaussian_compat: float = CRF_PARAMS["gaussian_compat"],
                         bilateral_srgb: float = CRF_PARAMS["bilateral_srgb"],
                         bilateral_compat: float = CRF_PARAMS["bilateral_compat"]):
    """(probabilities [H, W, N], seconds) from pydensecrf with the same unary and kernels; image [H, W, 3] uint8."""
    import pydensecrf.densecrf as dcrf  # benchmark-only dependency

    height, width, classes = logits.shape
    unary = -np.asarray(jax.nn.log_softmax(logits, axis=-1)).reshape(-1, classes).T
    start = time.perf_counter()
    crf = dcrf.DenseCRF2D(width, height, classes)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, np.float32))
    crf.addPairwiseGaussian(sxy=gaussian_sxy, compat=gaussian_compat)
    crf.addPairwiseBilateral(sxy=bilateral_sxy, srgb=bilateral_srgb, rgbim=np.ascontiguousarray(image),
                             compat=bilateral_compat)
    q = np.asarray(crf.inference(iterations))
    seconds = time.perf_counter() - start
    return q.T.reshape(height, width, classes), seconds


def parse_setting(setting: str) -> dict:
    """'exact' or 'grid<downsample>k<modes>' → dense_crf keyword arguments."""
    if setting == "exact":
        return {"method": "exact"}
    match = re.fullmatch(r"grid(\d+)k(\d+)", setting)
    if not match:
        raise ValueError(f"--settings entry {setting!r} is not valid; use 'exact' or e.g. 'grid32k16'")
    return {"method": "grid", "downsample": int(match[1]), "modes": int(match[2])}


def measure(setting: str, image: np.ndarray, logits: np.ndarray, *, iterations: int, bilateral_sxy: float,
            repeats: int) -> dict:
    """Runs one setting on one image: probabilities, seconds per image, compile seconds, peak memory."""
    crf = jax.jit(functools.partial(dense_crf, iterations=iterations, bilateral_sxy=bilateral_sxy,
                                    **CRF_PARAMS, **parse_setting(setting)))  # AOT: compile time apart
    args = (jnp.asarray(logits[None]), jnp.asarray(image[None]))
    start = time.perf_counter()
    compiled = crf.lower(*args).compile()
    q = np.asarray(jax.block_until_ready(compiled(*args)))[0]
    compile_seconds = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    options = dict(iterations=iterations, bilateral_sxy=bilateral_sxy, **CRF_PARAMS, **parse_setting(setting))
    jax.block_until_ready(dense_crf(*args, **options))  # as a user calls it: compiled inside, once
    plain = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(dense_crf(*args, **options))
        plain.append(time.perf_counter() - start)
    memory = compiled.memory_analysis()
    result = {"seconds_per_image": min(times) if times else compile_seconds, "compile_seconds": compile_seconds,
              "plain_call_seconds": min(plain) if plain else None,
              "peak_mb": None if memory is None else (memory.temp_size_in_bytes + memory.argument_size_in_bytes
                                                      + memory.output_size_in_bytes) / 2 ** 20}
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        result["device_peak_mb"] = stats["peak_bytes_in_use"] / 2 ** 20
    return q, result


def main(argv):
    del argv
    rows = []
    for size in _SIZES.value:
        height, width = (int(x) for x in size.split("x"))
        image, logits, labels = synthetic_scene(height, width, classes=_CLASSES.value, seed=_SEED.value)
        common = {"size": size, "classes": _CLASSES.value, "iterations": _ITERATIONS.value,
                  "device": jax.devices()[0].device_kind}
        unary_labels = logits.argmax(-1)
        print(json.dumps({**common, "setting": "unary", "accuracy": float(np.mean(unary_labels == labels))}),
              flush=True)
        references = {}
        if not _NO_REFERENCE.value:
            runs = [pydensecrf_reference(image, logits, iterations=_ITERATIONS.value,
                                         bilateral_sxy=_BILATERAL_SXY.value) for _ in range(max(_REPEATS.value, 1))]
            q, seconds = runs[0][0], min(seconds for _, seconds in runs)  # best of the repeats, as for ours
            references["pydensecrf"] = q.argmax(-1)
            rows.append({**common, "setting": "pydensecrf", "seconds_per_image": seconds,
                         "accuracy": float(np.mean(references["pydensecrf"] == labels))})
            print(json.dumps(rows[-1]), flush=True)
        settings = list(_SETTINGS.value)
        stored = exact_labels_path(size)
        if stored is not None and stored.exists():
            references["exact"] = np.load(stored)
            settings = [x for x in settings if x != "exact"]
        elif height * width <= _EXACT_MAX_PIXELS.value and "exact" not in settings:
            settings.insert(0, "exact")
        for setting in settings:
            if setting == "exact" and height * width > _EXACT_MAX_PIXELS.value:
                continue
            q, result = measure(setting, image, logits, iterations=_ITERATIONS.value,
                                bilateral_sxy=_BILATERAL_SXY.value, repeats=_REPEATS.value)
            predicted = q.argmax(-1)
            if setting == "exact":
                references["exact"] = predicted
                if stored is not None:
                    stored.parent.mkdir(parents=True, exist_ok=True)
                    np.save(stored, predicted)
            row = {**common, "setting": setting, **result, "accuracy": float(np.mean(predicted == labels))}
            for name, reference in references.items():
                row[f"agree_{name}"] = float(np.mean(predicted == reference))
            if "pydensecrf" in references:
                row["speedup_vs_pydensecrf"] = rows_seconds(rows, size, "pydensecrf") / row["seconds_per_image"]
            rows.append(row)
            print(json.dumps(row), flush=True)
        if "pydensecrf" in references and "exact" in references:
            for row in rows:
                if row["size"] == size and row["setting"] == "pydensecrf":
                    row["agree_exact"] = float(np.mean(references["pydensecrf"] == references["exact"]))
                    print(json.dumps(row), flush=True)
    print_table(rows)


def exact_labels_path(size: str) -> pathlib.Path | None:
    """Where --exact_labels keeps the exact CRF's labels of this size's scene and parameters."""
    if _EXACT_LABELS.value is None:
        return None
    name = (f"exact_{size}_n{_CLASSES.value}_it{_ITERATIONS.value}_sxy{_BILATERAL_SXY.value:g}_seed{_SEED.value}"
            f"_{'_'.join(f'{k}{v:g}' for k, v in CRF_PARAMS.items())}.npy")
    return pathlib.Path(_EXACT_LABELS.value) / name


def rows_seconds(rows: list[dict], size: str, setting: str) -> float:
    return next(r["seconds_per_image"] for r in rows if r["size"] == size and r["setting"] == setting)


def print_table(rows: list[dict]) -> None:
    columns = ["size", "setting", "seconds_per_image", "speedup_vs_pydensecrf", "peak_mb", "agree_pydensecrf",
               "agree_exact", "accuracy"]
    print(" | ".join(columns))
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            cells.append("-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value))
        print(" | ".join(cells))


if __name__ == "__main__":
    app.run(main)
