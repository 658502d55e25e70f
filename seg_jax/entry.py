"""The command line's process entry (`seg-jax`, `python launch.py`, `python -m seg_jax`): runs `seg_jax.cli.run`
in a process whose glibc allocator backs large buffers with transparent huge pages.

Why: XLA:CPU allocates each step's buffers afresh (for the default U-Net's train step ≈ 64 MB, above glibc's mmap
threshold), so every step maps new 4 KiB pages and faults on each: 15,874 page faults and 34 ms of kernel time per
103 ms step on 2 cores. With `glibc.malloc.hugetlb=1` glibc asks for huge pages on those mappings (where the kernel's
transparent huge pages are `madvise` or `always`): 547 faults, 87 ms per step (`benchmarks/train_step.py` prints
both; README, Speed, Huge pages). The tunable is read when a process starts, so the command runs itself again with it, once, before
anything heavy is imported. Set GLIBC_TUNABLES yourself (even empty) to keep your own allocator settings.
"""
from __future__ import annotations

import os
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb=1"


def environment(env: dict[str, str], *, libc: str) -> dict[str, str] | None:
    """The environment to run this process again with, or None to keep the process: off glibc (`libc`, as
    `platform.libc_ver()[0]` names it), and wherever GLIBC_TUNABLES is already set (the user's settings, or ours)."""
    if libc != "glibc" or "GLIBC_TUNABLES" in env:
        return None
    return {**env, "GLIBC_TUNABLES": TUNABLE}


def run() -> None:
    env = environment(dict(os.environ), libc=platform.libc_ver()[0])
    if env is not None:
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)  # same pid, same command line
    from seg_jax.cli import run as run_cli
    run_cli()
