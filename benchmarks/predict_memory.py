"""Peak memory of tiled prediction (`seg_jax.predict.predict_image`) as the image grows.

    python -m benchmarks.predict_memory                                  # 1024, 4096 px squares, default U-Net
    python -m benchmarks.predict_memory --sizes=1024,4096,8192 --config=experiments/fcn.py:fcn8s

Each size runs in its own subprocess (so no peak carries over), on a random uint8 image, with the config's freshly
initialised parameters (`predict.initial_predictor`; a trained run has the same shapes) and its `predict` section
(default 512-px tiles, 64-px overlap, 4 tiles per call). Reported per size, one JSON line each, then a table:
  device_bytes   XLA's `memory_analysis()` of the compiled tile function (arguments + outputs + temporaries):
                 what the model needs, the same for every image size by construction;
  host_peak      the peak of numpy/Python allocations while predicting (`tracemalloc`): the image, the blended
                 logits and weight sum, the label map;
  rss_growth     growth of the process's peak resident memory (`getrusage` maxrss) over a warm-up on one tile;
  host_bytes_per_pixel = host_peak / pixels.
The whole-image host buffers necessarily grow with the pixels; the claim checked is that nothing else does.

Measured on the shared 2-core CPU machine (default U-Net, 6 classes, 512-px tiles, 4 per call):

    | side px | tiles | s     | device MiB | host peak MiB | host B/px | RSS growth MiB |
    |---------|-------|-------|------------|---------------|-----------|----------------|
    | 1024    | 9     | 4.1   | 293.9      | 62            | 62.0      | 152            |
    | 4096    | 81    | 34.4  | 293.9      | 589           | 36.8      | 618            |
    | 8192    | 361   | 109.9 | 293.9      | 2317          | 36.2      | 2279           |

The device's share is flat; the host's is ~36 B/px at 6 classes: the blended logits (4 N B/px), their argmax
(int64, 8 B/px) and the label map (4 B/px), plus ~25 MiB of fixed tile buffers (which is why 1k² shows 62 B/px).
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
import tracemalloc

from absl import app, flags

_SIZES = flags.DEFINE_list("sizes", ["1024", "4096"], "Square image sides in pixels.")
_CONFIG = flags.DEFINE_string("config", "experiments/default.py", "Experiment config file[:arg].")
_ONE = flags.DEFINE_integer("one", None, "Internal: measure this side in this process.")


def _config(spec: str):
    import importlib.util
    path, _, arg = spec.partition(":")
    loader = importlib.util.spec_from_file_location("benchmarked_config", path)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module.get_config(arg or None)


def _device_bytes(predictor) -> int:
    """XLA's arguments + outputs + temporaries of the compiled tile function."""
    import numpy as np
    o = predictor.options
    tiles = np.zeros((o.batch_size, o.tile_size, o.tile_size, 3), np.float32)
    stats = predictor.apply.lower(predictor.variables, tiles).compile().memory_analysis()
    return int(stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes)


def measure(side: int, spec: str) -> dict:
    """One size, in this process."""
    import numpy as np
    from seg_jax import predict
    predictor = predict.initial_predictor(_config(spec))
    tile = predictor.options.tile_size
    rng = np.random.default_rng(0)
    predict.predict_image(rng.integers(0, 256, (tile, tile, 3), dtype=np.uint8), predictor)  # compiles
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    image = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    tracemalloc.start()
    start = time.perf_counter()
    prediction = predict.predict_image(image, predictor)
    seconds = time.perf_counter() - start
    _, host_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_rss
    return {"side": side, "pixels": side * side, "tiles": prediction.tiles, "seconds": round(seconds, 2),
            "device_bytes": _device_bytes(predictor), "host_peak": host_peak, "rss_growth": rss_growth,
            "image_bytes": image.nbytes, "host_bytes_per_pixel": round(host_peak / side ** 2, 2),
            "classes": len(predictor.class_names)}


def main(argv) -> None:
    del argv
    if _ONE.value:
        print(json.dumps(measure(_ONE.value, _CONFIG.value)), flush=True)
        return
    rows = []
    for side in _SIZES.value:
        done = subprocess.run([sys.executable, "-m", "benchmarks.predict_memory", f"--one={side}",
                               f"--config={_CONFIG.value}"], capture_output=True, text=True)
        if done.returncode:
            print(f"{side} px: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    mib = lambda b: f"{b / 2 ** 20:.0f}"
    print("\n| side px | tiles | s | device MiB | host peak MiB | host B/px | RSS growth MiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['side']} | {r['tiles']} | {r['seconds']} | {r['device_bytes'] / 2 ** 20:.1f} | "
              f"{mib(r['host_peak'])} | {r['host_bytes_per_pixel']} | {mib(r['rss_growth'])} |")


if __name__ == "__main__":
    app.run(main)
