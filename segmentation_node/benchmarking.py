"""Shared by the benchmark scripts: the yardstick every overhead is divided by."""
from __future__ import annotations

import time

import numpy as np


def memcpy_ms(shape: tuple[int, ...], repeats: int = 30) -> float:
    """Median time to copy a uint8 array of `shape` (e.g. the views' image bytes), in this run,
    on this machine: overheads are reported as multiples of it, never as bare milliseconds."""
    source = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    target = np.empty_like(source)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        np.copyto(target, source)
        times.append((time.perf_counter() - started) * 1000.0)
    return float(np.median(times))
