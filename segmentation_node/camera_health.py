"""Per-camera health: input rate, staleness and stamp order. Feeds the gate (FAULT on a stale
camera) and the verdict (not actionable while a camera is not fresh). ROS-free."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from segmentation_node.contract import CameraStatus


@dataclass
class CameraHealth:
    name: str
    stale_after_s: float
    window_s: float = 2.0
    _arrivals: deque = field(default_factory=deque)  # monotonic arrival times, seconds
    _last_stamp_ns: int | None = None
    _problem: tuple[CameraStatus, str] | None = None  # last input rejected, until a good one

    def accept(self, stamp_ns: int, arrival_s: float) -> str | None:
        """Register an image; returns why it must be rejected (stamp going backwards), else None."""
        if self._last_stamp_ns is not None and stamp_ns <= self._last_stamp_ns:
            back_ms = (self._last_stamp_ns - stamp_ns) / 1e6
            detail = f"stamp went back {back_ms:.1f} ms (out of order or repeated)"
            self._problem = (CameraStatus.BAD_INPUT, detail)
            return detail
        self._last_stamp_ns = stamp_ns
        self._arrivals.append(arrival_s)
        while self._arrivals and self._arrivals[0] < arrival_s - self.window_s:
            self._arrivals.popleft()
        self._problem = None
        return None

    def reject(self, detail: str) -> None:
        """An image that could not be used (encoding, size): the camera is not healthy."""
        self._problem = (CameraStatus.BAD_INPUT, detail)

    def rate_hz(self, now_s: float) -> float:
        recent = [t for t in self._arrivals if t >= now_s - self.window_s]
        return (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0

    def status(self, now_s: float) -> tuple[CameraStatus, str]:
        if self._problem is not None:  # the newest image was rejected
            return self._problem
        if not self._arrivals:
            return CameraStatus.MISSING, "no image received yet"
        age = now_s - self._arrivals[-1]
        if age > self.stale_after_s:
            return CameraStatus.STALE, f"no image for {age:.1f} s (limit {self.stale_after_s:.1f} s)"
        return CameraStatus.OK, ""
