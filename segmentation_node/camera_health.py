"""Per-camera health for the gate, the verdict and diagnostics: input rate, staleness,
rejected input (BAD_INPUT) and views that show nothing usable (BLIND). ROS-free.

Problems are sticky: one good image after bad ones proves little (a camera that alternates
good and bad images must not look OK half of the time, nor be RESUMEd on), so BAD_INPUT and
BLIND clear only after `good_images_to_recover` consecutive good images or clear views.
Seconds are of whichever clock the caller uses for arrivals and status (the node: middleware
reception times); stamps are compared with the caller's clock in nanoseconds.
"""
from __future__ import annotations

import math
import threading
from collections import deque
from numbers import Integral, Real

from segmentation_node.contract import CameraStatus


def _is_seconds(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


class _StickyProblem:
    """The last problem reported, until `needed` consecutive good observations."""

    def __init__(self, needed: int, good: str):
        self.needed, self.good = needed, good
        self.detail: str | None = None
        self.streak = 0

    def report(self, problem: str | None) -> None:
        if problem is not None:
            self.detail, self.streak = problem, 0
        elif self.detail is not None:
            self.streak += 1
            if self.streak >= self.needed:
                self.detail = None

    def describe(self) -> str:
        left = self.needed - self.streak
        return f"{self.detail} ({left} more {self.good}{'s' if left > 1 else ''} needed)"


class CameraHealth:
    def __init__(self, name: str, stale_after_s: float, good_images_to_recover: int = 3,
                 max_future_stamp_s: float = 1.0, window_s: float = 2.0):
        if not isinstance(name, str) or not name:
            raise ValueError(f"camera name must be a non-empty string, got {name!r}")
        for label, value in (("stale_after_s", stale_after_s), ("window_s", window_s)):
            if not _is_seconds(value) or value <= 0:
                raise ValueError(f"{name}: {label} must be a positive number of seconds, got {value!r}")
        if not _is_seconds(max_future_stamp_s) or max_future_stamp_s < 0:
            raise ValueError(f"{name}: max_future_stamp_s must be a number of seconds >= 0, got {max_future_stamp_s!r}")
        if isinstance(good_images_to_recover, bool) or not isinstance(good_images_to_recover, Integral) \
                or good_images_to_recover < 1:
            raise ValueError(f"{name}: good_images_to_recover must be an integer >= 1, got {good_images_to_recover!r}")
        self.name = name
        self.stale_after_s = float(stale_after_s)
        self.window_s = float(window_s)
        self.max_future_stamp_s = float(max_future_stamp_s)
        self.good_images_to_recover = int(good_images_to_recover)
        # The subscription callback, the worker, the watchdog and diagnostics all use one instance.
        self._lock = threading.Lock()
        self._arrivals: deque[float] = deque()  # every received image, seconds, within window_s
        self._newest_s: float | None = None
        self._last_stamp_ns: int | None = None  # of the last accepted image
        self._bad_input = _StickyProblem(self.good_images_to_recover, "good image")
        self._blind = _StickyProblem(self.good_images_to_recover, "clear view")

    def accept(self, stamp_ns: int, arrival_s: float, now_ns: int, format_problem: str | None = None) -> str | None:
        """One received image: why it is rejected, or None. Every image counts as an arrival: a
        camera sending bad images is not stale, it is BAD_INPUT."""
        with self._lock:
            self._arrivals.append(arrival_s)
            self._newest_s = arrival_s if self._newest_s is None else max(self._newest_s, arrival_s)
            while self._arrivals and self._arrivals[0] < arrival_s - self.window_s:
                self._arrivals.popleft()
            problem = format_problem
            if problem is None and stamp_ns - now_ns > self.max_future_stamp_s * 1e9:
                # Not remembered as the last stamp: one wild stamp must not reject every real image after it.
                problem = (f"stamp is {(stamp_ns - now_ns) / 1e9:.2f} s ahead of this node's clock "
                           f"(limit {self.max_future_stamp_s:.2f} s)")
            if problem is None and self._last_stamp_ns is not None and stamp_ns <= self._last_stamp_ns:
                problem = f"stamp went back {(self._last_stamp_ns - stamp_ns) / 1e6:.1f} ms (out of order or repeated)"
            if problem is None:
                self._last_stamp_ns = stamp_ns
            self._bad_input.report(problem)
            return problem

    def reject(self, detail: str) -> None:
        """A problem found after accept() (conversion in the worker): BAD_INPUT, recovery restarts."""
        with self._lock:
            self._bad_input.report(detail)

    def report_view(self, problem: str | None) -> None:
        """View-quality verdict of the newest converted image (ViewQualityCheck.check)."""
        with self._lock:
            self._blind.report(problem)

    def rate_hz(self, now_s: float) -> float:
        with self._lock:
            recent = [t for t in self._arrivals if t >= now_s - self.window_s]
        span = max(recent) - min(recent) if len(recent) > 1 else 0.0
        return (len(recent) - 1) / span if span > 0 else 0.0

    def status(self, now_s: float) -> tuple[CameraStatus, str]:
        """Bad input first: the images themselves are wrong, whatever else holds. Then blind: the
        images are fine but show nothing usable. Staleness of a camera with either problem is
        added to the detail rather than hiding the problem that must be fixed."""
        with self._lock:
            newest = self._newest_s
            problems = [(status, sticky.describe()) for status, sticky in
                        ((CameraStatus.BAD_INPUT, self._bad_input), (CameraStatus.BLIND, self._blind))
                        if sticky.detail is not None]
        if newest is None:
            freshness = (CameraStatus.MISSING, "no image received yet")
        elif now_s - newest > self.stale_after_s:
            freshness = (CameraStatus.STALE, f"no image for {now_s - newest:.1f} s (limit {self.stale_after_s:.1f} s)")
        else:
            freshness = (CameraStatus.OK, "")
        if not problems:
            return freshness
        status, detail = problems[0]
        return status, detail + (f"; {freshness[1]}" if freshness[0] is not CameraStatus.OK else "")
