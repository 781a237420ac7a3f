"""Approximate-time synchronization of N camera streams, with message_filters'
ApproximateTimeSynchronizer semantics (`queue_size` messages kept per input, a set is emitted
when one message per input lies within `slop` seconds): the in-tree stand-in where
message_filters cannot be installed. ROS-free: it sees only (stamp_ns, payload) pairs."""
from __future__ import annotations

import itertools
import threading
from typing import Any, Callable

# The node's defaults (parameters sync_slop_s, sync_queue_size); offline modes use the same.
DEFAULT_SLOP_S = 0.02
DEFAULT_QUEUE_SIZE = 5


class ApproximateSync:
    def __init__(self, inputs: int, queue_size: int, slop_s: float, callback: Callable[..., None]):
        if inputs < 1 or queue_size < 1 or slop_s < 0:
            raise ValueError("need inputs >= 1, queue_size >= 1 and slop >= 0")
        self.queue_size = queue_size
        self.slop_ns = int(slop_s * 1e9)
        self.callback = callback
        self._queues: list[dict[int, Any]] = [{} for _ in range(inputs)]
        self._lock = threading.Lock()

    def add(self, index: int, stamp_ns: int, message: Any) -> None:
        """Offer input `index`'s message; the callback gets one message per input, in input
        order, as soon as a set within the slop exists (called outside the lock)."""
        with self._lock:
            queue = self._queues[index]
            queue[stamp_ns] = message
            while len(queue) > self.queue_size:
                del queue[min(queue)]
            matched = self._match(index, stamp_ns)
            if matched is None:
                return
            messages = [self._queues[i].pop(stamp) for i, stamp in enumerate(matched)]
        self.callback(*messages)

    def _match(self, index: int, stamp_ns: int) -> list[int] | None:
        """Stamps of a set containing the new message, closest candidates tried first."""
        candidates = []
        for other, queue in enumerate(self._queues):
            if other == index:
                candidates.append([stamp_ns])
                continue
            near = sorted((s for s in queue if abs(s - stamp_ns) <= self.slop_ns), key=lambda s: abs(s - stamp_ns))
            if not near:
                return None
            candidates.append(near)
        for stamps in itertools.product(*candidates):
            if max(stamps) - min(stamps) <= self.slop_ns:
                return list(stamps)
        return None
