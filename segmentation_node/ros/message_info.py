"""Subscriptions that see the middleware's message info (reception time, publisher GID) where
the distro's rclpy passes it to callbacks (Iron and later), and None elsewhere (Humble), so the
node's code has one shape on every robot."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from rclpy.subscription import Subscription

WITH_MESSAGE_INFO = hasattr(Subscription, "CallbackType")


def subscribe_with_info(node, message_type, topic: str, callback: Callable[[Any, dict | None], None], qos):
    """`callback(message, info)`; info is the rmw message info dict, or None without support."""
    if WITH_MESSAGE_INFO:
        return node.create_subscription(message_type, topic, lambda message, info: callback(message, info), qos)
    return node.create_subscription(message_type, topic, lambda message: callback(message, None), qos)


def received_ns(info: dict | None) -> int:
    """When the middleware received the message (system clock, ns): taken by its own threads, so
    a busy executor does not make a camera look late. Now, where the middleware does not say."""
    stamp = (info or {}).get("received_timestamp") or 0
    return int(stamp) if stamp > 0 else time.time_ns()


@dataclass(frozen=True)
class Arrived:
    """An image with its reception time, as the synchronizer holds it (message_filters reads
    `header` for the stamp)."""

    header: Any
    message: Any
    arrival_ns: int
