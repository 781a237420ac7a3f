"""The one place a node's results leave it (ROS-free).

A verdict is decided when a frame set's processing starts, and the world moves on while the
model runs. `publish` checks it again against the conditions as they are at that moment
(`actionability.recheck`) and sends it while holding the lock that every gate and intent update
takes (`update`): no PAUSE, new gate epoch or intent can slip in between the check and the send,
and sequence numbers leave in order.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, TypeVar

from segmentation_node.perception.actionability import Conditions, Verdict, recheck

T = TypeVar("T")


class ResultPublisher:
    def __init__(self, conditions_now: Callable[[], Conditions],
                 send: Callable[[Any, Verdict, Conditions, int], None]):
        """`conditions_now()`: the gate, newest intent and cameras now; `send(result, verdict,
        conditions, sequence)`: fill the result's verdict fields and put it on the wire."""
        self._conditions_now, self._send = conditions_now, send
        self._lock = threading.Lock()
        self.sequence = 0

    def update(self, change: Callable[[], T]) -> T:
        """Apply a gate or intent update between two publications, never during one."""
        with self._lock:
            return change()

    def publish(self, result: Any, verdict: Verdict, decided: Conditions) -> Verdict:
        """Send `result` with the verdict as it stands now; returns that verdict."""
        with self._lock:
            now = self._conditions_now()
            final = recheck(verdict, decided, now)
            self.sequence += 1
            self._send(result, final, now, self.sequence)
            return final
