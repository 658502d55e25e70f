"""PyTorch train steps of minimal mirrors of seg_jax's U-Net and FCN-8s, for the GPU suite (benchmark-only: torch).

The mirrors have the layers, kernel sizes, channel counts, BatchNorm placement, up-convolutions and heads of
seg_jax/models/unet.py and fcn.py for the `config.model` options the experiment configs use (norm "batch" or
"none", U-Net's "transpose" upsampling), hence the same parameter count (printed beside seg_jax's); initial values
are not mirrored, as only the cost of a step is compared. They are deliberately minimal: `benchmarks/torch_mirror.py`
(the torch reference benchmark's mirrors, on another branch) covers more options and can replace them.

The step is what seg_jax's step does for these configs: forward, cross-entropy, backward, SGD with momentum and
weight decay (experiments/cityscapes.py's optimiser); channels_last tensors; float32 with TF32 allowed (XLA's
default precision) or bfloat16 autocast (parameters float32, as flax's `dtype=bfloat16`).
"""
from __future__ import annotations

import time
from typing import Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from seg_jax.models.fcn import FC_WIDTH, VGG16_BLOCKS
from seg_jax.models.layers import bilinear_kernel_size
from seg_jax.studies.spec import load_config


def _conv_block(in_channels: int, features: int, *, num_convs: int, kernel_size: int, norm: str) -> nn.Sequential:
    """seg_jax's ConvBlock: `num_convs` × ('same' conv, bias only without a norm → norm → ReLU)."""
    layers: list[nn.Module] = []
    for index in range(num_convs):
        layers += [nn.Conv2d(in_channels if index == 0 else features, features, kernel_size,
                             padding=kernel_size // 2, bias=norm == "none"),
                   nn.BatchNorm2d(features) if norm == "batch" else nn.Identity(), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _check_norm(norm: str) -> None:
    if norm not in ("none", "batch"):
        raise ValueError(f"the minimal torch mirrors know norm 'none' and 'batch', not {norm!r}")


class UNet(nn.Module):
    """NCHW float [B, 3, H, W] → logits [B, N, H, W]; H and W multiples of 2**depth."""

    def __init__(self, num_classes: int, *, depth: int = 4, base_width: int = 64, norm: str = "none",
                 upsample: str = "transpose"):
        super().__init__()
        _check_norm(norm)
        if upsample != "transpose":
            raise ValueError("the minimal torch U-Net mirrors upsample='transpose' only")
        widths = [base_width * 2 ** level for level in range(depth + 1)]
        block = lambda c_in, c_out: _conv_block(c_in, c_out, num_convs=2, kernel_size=3, norm=norm)
        self.down = nn.ModuleList(block(3 if level == 0 else widths[level - 1], widths[level])
                                  for level in range(depth))
        self.bottleneck = block(widths[depth - 1] if depth else 3, widths[depth])
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2)
                                for level in range(depth))
        self.dec = nn.ModuleList(block(2 * widths[level], widths[level]) for level in range(depth))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for level in reversed(range(len(self.up))):
            x = self.dec[level](torch.cat([skips[level], self.up[level](x)], dim=1))
        return self.head(x)


def _upsample(channels: int, factor: int) -> nn.ConvTranspose2d:
    """seg_jax's BilinearUpsample: a learnable ×factor transposed conv without bias, exactly f·H outputs."""
    return nn.ConvTranspose2d(channels, channels, bilinear_kernel_size(factor), stride=factor,
                              padding=factor // 2, bias=False)


class FCN8s(nn.Module):
    """NCHW float [B, 3, H, W] → logits [B, N, H, W]; H and W multiples of 32."""

    def __init__(self, num_classes: int, *, width_multiplier: float = 1.0, fc6_kernel: int = 3, norm: str = "none",
                 dropout_rate: float = 0.0):
        super().__init__()
        _check_norm(norm)
        width = lambda channels: max(1, round(channels * width_multiplier))
        blocks, in_channels = [], 3
        for channels, num_convs in VGG16_BLOCKS:
            blocks.append(_conv_block(in_channels, width(channels), num_convs=num_convs, kernel_size=3, norm=norm))
            in_channels = width(channels)
        self.blocks = nn.ModuleList(blocks)
        fc = width(FC_WIDTH)
        self.fc6 = _conv_block(in_channels, fc, num_convs=1, kernel_size=fc6_kernel, norm=norm)
        self.fc7 = _conv_block(fc, fc, num_convs=1, kernel_size=1, norm=norm)
        self.dropout = nn.Dropout(dropout_rate)
        self.score_fr = nn.Conv2d(fc, num_classes, 1)
        self.score_pool4 = nn.Conv2d(width(VGG16_BLOCKS[3][0]), num_classes, 1)
        self.score_pool3 = nn.Conv2d(width(VGG16_BLOCKS[2][0]), num_classes, 1)
        self.upscore2, self.upscore_pool4 = _upsample(num_classes, 2), _upsample(num_classes, 2)
        self.upscore8 = _upsample(num_classes, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pools = []
        for block in self.blocks:
            x = F.max_pool2d(block(x), 2)
            pools.append(x)
        x = self.dropout(self.fc7(self.dropout(self.fc6(x))))
        scores = self.upscore2(self.score_fr(x)) + self.score_pool4(pools[3])
        scores = self.upscore_pool4(scores) + self.score_pool3(pools[2])
        return self.upscore8(scores)


def make_mirror(model_options: dict, *, num_classes: int) -> nn.Module:
    """The mirror of `config.model` (a dict with "name" "unet" or "fcn8s" and that model's options)."""
    options = dict(model_options)
    name = options.pop("name")
    options.pop("dtype", None)
    if name == "unet":
        return UNet(num_classes, **options)
    if name == "fcn8s":
        return FCN8s(num_classes, **options)
    raise ValueError(f"no torch mirror of model {name!r}; mirrored: unet, fcn8s")


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
    net = make_mirror(config.model.to_dict(), num_classes=classes).to(device, memory_format=torch.channels_last)
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
