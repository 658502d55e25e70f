"""PyTorch train steps of the mirrors of seg_jax's U-Net and FCN-8s (`benchmarks.torch_mirror`: same layers, same
parameter count, printed beside seg_jax's), eager or `torch.compile`d, for the GPU suite (benchmark-only: torch).
Initial values are not mirrored, as only the cost of a step is compared.

The step is what seg_jax's step does for these configs: forward, cross-entropy, backward, SGD with momentum and
weight decay (experiments/cityscapes.py's optimiser); channels_last tensors; float32 with TF32 allowed (XLA's
default precision) or bfloat16 autocast (parameters float32, as flax's `dtype=bfloat16`).
"""
from __future__ import annotations

import time
from typing import Iterator

import numpy as np
import torch
from torch.nn import functional as F

from benchmarks import torch_mirror
from seg_jax.studies.spec import load_config
from seg_jax.train.experiment import model_kwargs


def _time_steps(step, *, calls: int, max_seconds: float, sync) -> tuple[float, float]:
    """(seconds of the first step, compilation included; median seconds of up to `calls` further steps)."""
    start = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - start
    times: list[float] = []
    began = time.perf_counter()
    while len(times) < max(calls, 1) and (not times or time.perf_counter() - began < max_seconds):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return first, float(np.median(times))


def train_lines(spec: str, *, size: int, classes: int, batch: int | None, compiled: bool, smoke: bool, calls: int,
                max_seconds: float) -> Iterator[dict]:
    """One JSON line per dtype (float32, bfloat16) of the mirror of `spec`'s model trained at size² pixels."""
    cuda = torch.cuda.is_available()
    if not cuda and not smoke:
        yield {"skipped": f"torch {torch.__version__} sees no CUDA device"}
        return
    device = torch.device("cuda" if cuda else "cpu")
    if smoke:
        torch.set_num_threads(1)  # tiny tensors: threads only contend with the jax items' and other processes'
    torch.backends.cuda.matmul.allow_tf32 = True  # float32 as XLA's default precision computes it
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    config = load_config(spec)
    batch = int(batch or config.train.batch_size)
    net = torch_mirror.make_mirror(config.model.name, num_classes=classes, **model_kwargs(config)).to(
        device, memory_format=torch.channels_last)
    params = sum(p.numel() for p in net.parameters())
    opt = config.optimizer
    optimizer = torch.optim.SGD(net.parameters(), lr=opt.learning_rate, momentum=opt.momentum,
                                weight_decay=opt.weight_decay)
    forward = torch.compile(net, backend="eager" if smoke else "inductor") if compiled else net
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=generator).to(device, memory_format=torch.channels_last)
    labels = torch.randint(0, classes, (batch, size, size), generator=generator).to(device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for dtype in ("float32", "bfloat16"):
        def step():
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
                logits = forward(images)
            loss = F.cross_entropy(logits.float(), labels)
            loss.backward()
            optimizer.step()

        first, seconds = _time_steps(step, calls=calls, max_seconds=max_seconds, sync=sync)
        yield {"framework": "torch", "mode": "compile" if compiled else "eager", "model": config.model.name,
               "config": spec.split(",")[0], "dtype": dtype, "size": size, "batch": batch, "classes": classes,
               "params": params, "device_kind": torch.cuda.get_device_name() if cuda else "cpu",
               "torch": torch.__version__, "first_step_s": round(first, 3), "step_s": seconds,
               "images_per_s": batch / seconds,
               "device_peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else None}
