"""The GPU suite's driver: its smoke run prints every item's lines with sane numbers; isolation and summaries."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from benchmarks import gpu_suite

ROOT = pathlib.Path(__file__).resolve().parents[1]


# A model's float32 and bfloat16 train steps differ only by `config.model.dtype` (tests/test_precision.py checks it for
# every model), so one of the two per model runs here: the U-Net's bfloat16 step (the dtype path), the others' float32.
# Each train step compiled costs about a sixth of the smoke run.
SMOKE_ITEMS = [name for name in gpu_suite.ITEMS
               if name not in ("jax_unet_fp32", "jax_fcn8s_bf16", "jax_mask_rcnn_bf16")]


@pytest.fixture(scope="module")
def smoke_lines() -> list[dict]:
    # One process for all items (--noisolate): a process per item would spend most of the time importing jax.
    result = subprocess.run([sys.executable, "-m", "benchmarks.gpu_suite", "--smoke", "--noisolate",
                             f"--items={','.join(SMOKE_ITEMS)}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def _positive(line: dict, *keys: str) -> None:
    for key in keys:
        assert isinstance(line[key], (int, float)) and line[key] > 0, (key, line)


def test_smoke_run_prints_every_item_with_positive_numbers(smoke_lines):
    assert not [line for line in smoke_lines if "error" in line]
    by_item: dict[str, list[dict]] = {}
    for line in smoke_lines:
        by_item.setdefault(line["item"], []).append(line)
    assert [name for name in by_item if name != "summary"] == SMOKE_ITEMS
    assert by_item["device"][0]["platform"] == "cpu" and by_item["device"][0]["peak_tflop_per_s"] is None
    for name in SMOKE_ITEMS:
        if name.startswith("jax_"):
            (line,) = by_item[name]
            _positive(line, "images_per_s", "step_s", "tflop_per_s", "gflop_per_step", "params", "compile_s")
            assert line["dtype"] == ("bfloat16" if name.endswith("bf16") else "float32")
            assert line["size"] == 32 and line["batch"] == 2
    jax_params = {line["model"]: line["params"] for name in SMOKE_ITEMS if name.startswith("jax_")
                  for line in by_item[name]}
    for name in ("crf_512x512", "crf_1024x2048"):
        ours, reference = by_item[name]
        _positive(ours, "seconds_per_image", "megapixels_per_s")
        assert 0.5 < ours["accuracy"] <= 1
        if gpu_suite.why_not_importable("pydensecrf.densecrf"):
            assert reference["method"] == "pydensecrf" and "skipped" in reference
        else:
            _positive(reference, "seconds_per_image", "seg_jax_speedup")
            assert 0.5 < reference["agree_seg_jax"] <= 1
    for name in [n for n in SMOKE_ITEMS if n.startswith("torch_")]:
        if gpu_suite.why_not_importable("torch"):
            assert "skipped" in by_item[name][0]
            continue
        assert [line["dtype"] for line in by_item[name]] == ["float32", "bfloat16"]
        for line in by_item[name]:
            _positive(line, "images_per_s", "step_s")
            assert line["params"] == jax_params[line["model"]]  # the mirror has seg_jax's parameters


def test_run_isolated_keeps_the_lines_of_an_item_that_fails_or_hangs():
    lines: list[str] = []
    error = gpu_suite.run_isolated([sys.executable, "-c", "import sys; print('{\"a\": 1}', flush=True); "
                                    "sys.exit('broken')"], timeout_s=30, emit=lines.append)
    assert lines == ['{"a": 1}'] and error.startswith("exit status 1") and "broken" in error
    lines.clear()
    error = gpu_suite.run_isolated([sys.executable, "-c", "import time; print('x', flush=True); time.sleep(60)"],
                                   timeout_s=2, emit=lines.append)
    assert lines == ["x"] and error == "timed out after 2 s"
    assert gpu_suite.run_isolated([sys.executable, "-c", "pass"], timeout_s=30, emit=lines.append) is None


def test_suite_budget_skips_the_items_it_cannot_reach():
    lines: list[str] = []
    sizes = gpu_suite.sizes_for(smoke=True)
    rows = gpu_suite.run_suite(["device", "crf_512x512"], sizes=sizes, isolate=True, budget_s=1, emit=lines.append)
    assert [(r["item"], "skipped" in r) for r in rows] == [("device", True), ("crf_512x512", True)]


def test_peaks_by_device_kind():
    assert gpu_suite.peak_tflops("NVIDIA H100 80GB HBM3")["bfloat16"] == 989.4
    assert gpu_suite.peak_tflops("NVIDIA H200")["tf32"] == 494.7
    assert gpu_suite.peak_tflops("NVIDIA H100 PCIe")["bfloat16"] == 756.0
    assert gpu_suite.peak_tflops("cpu") is None


def test_summary_ratios():
    rows = [{"item": "jax_unet_bf16", "framework": "jax", "model": "unet", "dtype": "bfloat16", "images_per_s": 100.0,
             "gflop_per_step": 800.0, "batch": 16, "size": 512},
            {"item": "torch_unet_eager", "framework": "torch", "mode": "eager", "model": "unet", "dtype": "bfloat16",
             "images_per_s": 50.0, "batch": 16, "size": 512},
            {"item": "crf_512x512", "method": "seg_jax grid40k16", "size": "512x512", "seconds_per_image": 0.01},
            {"item": "crf_512x512", "method": "pydensecrf", "size": "512x512", "seconds_per_image": 1.0}]
    torch_line, crf_line = gpu_suite.summarise(rows)
    assert torch_line["ratio"] == 0.5 and torch_line["torch_tflop_per_s_xla_count"] == pytest.approx(2.5)
    assert crf_line["ratio"] == pytest.approx(100.0)
