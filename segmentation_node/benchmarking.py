"""Shared by the benchmark scripts and workcell_sizing: the yardsticks measured in the same run
(a memcpy every overhead is divided by, copy bandwidth, GEMM rate) and the CPU's name."""
from __future__ import annotations

import os
import platform
import time
from typing import Callable

import numpy as np


def median_ms(run: Callable[[], object], repeats: int, warm_up: bool = True) -> float:
    """Median milliseconds of `repeats` calls of `run`, after one uncounted call (lazy
    allocations, caches) unless `warm_up` is off."""
    if warm_up:
        run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000.0)
    return float(np.median(times))


def memcpy_ms(shape: tuple[int, ...], repeats: int = 30) -> float:
    """Median time to copy a uint8 array of `shape` (e.g. the views' image bytes), in this run,
    on this machine: overheads are reported as multiples of it, never as bare milliseconds."""
    source = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    target = np.empty_like(source)
    return median_ms(lambda: np.copyto(target, source), repeats, warm_up=False)


def copy_bandwidth(mebibytes: int = 256, repeats: int = 5) -> float:
    """Bytes per second a copy moves on this machine (read + write), median of `repeats`."""
    shape = (mebibytes << 20,)
    return 2 * float(shape[0]) / (memcpy_ms(shape, repeats) / 1000.0)


def gemm_rate(size: int = 2048, repeats: int = 5) -> float:
    """fp32 FLOP/s of a square torch matmul with torch's current thread count, median."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    return 2.0 * size ** 3 / (median_ms(lambda: torch.mm(a, b), repeats) / 1000.0)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores"
