"""The camera side of the tools that play cameras to a running segmentation node (the demo,
live replay, the swap check, the node benchmark): one sensor_msgs/Image publisher per camera on
its relative `<camera>/image_raw`."""
from __future__ import annotations

import time

from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from segmentation_node.ros.messages import stamp_of


class CameraRig:
    def __init__(self, node, cameras: list[str], depth: int = 5):
        # Reliable towards the node (the node's best-effort subscription matches it): large
        # images sent best effort lose fragments on a busy loopback.
        qos = QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)
        self.publishers = {camera: node.create_publisher(Image, f"{camera}/image_raw", qos) for camera in cameras}

    def connected(self) -> bool:
        """Every camera topic has a subscriber (the node is active)."""
        return all(publisher.get_subscription_count() for publisher in self.publishers.values())

    def publish(self, camera: str, message: Image) -> None:
        self.publishers[camera].publish(message)

    def publish_now(self, messages: dict[str, Image]) -> int:
        """One frame set: every camera's message stamped with the same now (ns, returned)."""
        stamp_ns = time.time_ns()
        for camera, message in messages.items():
            message.header.stamp = stamp_of(stamp_ns)
            self.publishers[camera].publish(message)
        return stamp_ns
