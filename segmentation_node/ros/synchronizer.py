"""Frame-set synchronizer: message_filters' ApproximateTimeSynchronizer where the distro has it
(robots), else the in-tree stand-in with the same slop / queue semantics (segmentation_node.sync).
Both are fed the same way, after the node's own per-camera checks."""
from __future__ import annotations

import importlib.util
from typing import Any, Callable

from segmentation_node.sync import ApproximateSync


class _MessageFiltersSync:
    def __init__(self, inputs: int, queue_size: int, slop_s: float, callback: Callable[..., None]):
        import message_filters

        self._inputs = [message_filters.SimpleFilter() for _ in range(inputs)]
        self._sync = message_filters.ApproximateTimeSynchronizer(self._inputs, queue_size, slop_s)
        self._sync.registerCallback(callback)

    def add(self, index: int, stamp_ns: int, message: Any) -> None:
        self._inputs[index].signalMessage(message)  # message_filters reads the stamp from the header


def make_synchronizer(inputs: int, queue_size: int, slop_s: float, callback: Callable[..., None]):
    if importlib.util.find_spec("message_filters") is not None:
        return _MessageFiltersSync(inputs, queue_size, slop_s, callback)
    return ApproximateSync(inputs, queue_size, slop_s, callback)
