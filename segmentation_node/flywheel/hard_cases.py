"""Event-triggered hard cases: the frame sets around a moment the system was unsure or wrong.

A ring buffer holds the last `frames_before` frame sets; a trigger (low confidence, automatic
stop, an operator stopping a running cell, a mis-pick or operator-reject report) starts a clip
of those plus the next `frames_after`, handed to a sink as one unit. Triggers during a clip join
it; a trigger kind then rests for `cooldown_frames` so a long uncertain stretch is one clip, not
a flood.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from segmentation_node.flywheel.shards import LoggedFrameSet

LOW_CONFIDENCE, AUTO_PAUSE, OPERATOR_PAUSE = "low_confidence", "auto_pause", "operator_pause"
MIS_PICK, OPERATOR_REJECT = "mis_pick", "operator_reject"


@dataclass(frozen=True)
class HardCasePolicy:
    frames_before: int = 5
    frames_after: int = 5
    cooldown_frames: int = 30

    def __post_init__(self):
        if self.frames_before < 0 or self.frames_after < 0 or self.cooldown_frames < 0:
            raise ValueError("frames_before, frames_after and cooldown_frames must be >= 0")


@dataclass
class HardCaseClip:
    triggers: list[str]
    frame_sets: list[LoggedFrameSet] = field(default_factory=list)
    remaining: int = 0


class HardCaseRecorder:
    """Not thread-safe: the caller serialises `observe` and `trigger`."""

    def __init__(self, policy: HardCasePolicy, sink: Callable[[HardCaseClip], None]):
        self.policy = policy
        self.sink = sink
        self._ring: deque[LoggedFrameSet] = deque(maxlen=policy.frames_before + 1)
        self._clip: HardCaseClip | None = None
        self._resting: dict[str, int] = {}  # trigger kind -> frame sets until it may fire again

    def trigger(self, kind: str, detail: str = "") -> bool:
        """Start (or join) a clip around the newest frame set; False while that kind rests."""
        if self._resting.get(kind, 0) > 0:
            return False
        label = f"{kind}: {detail}" if detail else kind
        self._resting[kind] = self.policy.cooldown_frames
        if self._clip is not None:
            self._clip.triggers.append(label)
            return True
        self._clip = HardCaseClip([label], list(self._ring), self.policy.frames_after)
        if self._clip.remaining == 0:
            self._finish()
        return True

    def observe(self, frame_set: LoggedFrameSet, triggers: list[tuple[str, str]] = ()) -> None:
        self._resting = {kind: left - 1 for kind, left in self._resting.items() if left > 1}
        self._ring.append(frame_set)
        if self._clip is not None:
            self._clip.frame_sets.append(frame_set)
            self._clip.remaining -= 1
            if self._clip.remaining <= 0:
                self._finish()
        for kind, detail in triggers:
            self.trigger(kind, detail)

    def flush(self) -> None:
        """Hand over a clip still collecting (shutdown): what was seen is kept."""
        if self._clip is not None:
            self._finish()

    def _finish(self) -> None:
        clip, self._clip = self._clip, None
        if clip.frame_sets:
            self.sink(clip)
