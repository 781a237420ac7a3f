"""Rolling per-stage timings of the frame-set path (sync, conversion, backend, ...), for the
node's diagnostics and the benchmarks. Bounded: the newest `window` samples per stage. ROS-free."""
from __future__ import annotations

import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import Iterator

import numpy as np


class StageTimer:
    def __init__(self, window: int = 300):
        self.window = window
        self._samples: dict[str, deque] = {}
        self._lock = threading.Lock()  # callbacks and the worker record concurrently

    def add(self, stage: str, milliseconds: float) -> None:
        with self._lock:
            self._samples.setdefault(stage, deque(maxlen=self.window)).append(milliseconds)

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, (time.perf_counter() - started) * 1000.0)

    def summary(self) -> dict[str, tuple[float, float, int]]:
        """stage -> (p50 ms, p95 ms, samples), in the order stages were first seen."""
        with self._lock:
            snapshot = {stage: np.array(samples) for stage, samples in self._samples.items()}
        return {stage: (float(np.percentile(values, 50)), float(np.percentile(values, 95)), len(values))
                for stage, values in snapshot.items() if len(values)}
