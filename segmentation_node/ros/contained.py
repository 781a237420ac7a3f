"""Callbacks that cannot take a node down: an exception is logged in one line and answered by the
callback's own fail-safe fallback, never raised into the executor (which would end the node)."""
from __future__ import annotations

import functools
from typing import Any, Callable

from segmentation_node.gate import printable


def contained(node, what: str, fallback: Callable[..., Any] | None = None):
    """Wrap `callback`; on an exception log "<what> failed: ..." and return fallback(error, *args).
    functools.wraps keeps the signature, so rclpy still sees whether it takes message info."""
    def wrap(callback):
        @functools.wraps(callback)
        def safe(*args):
            try:
                return callback(*args)
            except Exception as error:  # noqa: BLE001 - containment is this wrapper's whole purpose
                node.get_logger().error(f"{what} failed: {type(error).__name__}: {printable(error, 300)}")
                return fallback(error, *args) if fallback is not None else None
        return safe
    return wrap
