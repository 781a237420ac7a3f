"""Live replay for the regression harness: a recording's camera images go to the running
segmentation node over DDS at the recorded pace (times a rate factor, like `ros2 bag play
--rate`), and the node's FrameSetResult for every replayed frame set is recorded to a bag.

The replayer stands in for the operator during a regression run: it publishes a gate state
RUNNING (latched, with heartbeats) and the given intent (the same conditions every run), so the
decisions compare. Start the node under test with `gate_node:=/<namespace>/regression_replay`
so it trusts this gate, and not next to a real operator_intent node. Results the node publishes for anything else
(watchdog reports stamped "now") are not recorded: a run is keyed by the recording's stamps.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import rclpy
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from segmentation_node.bag_records import FrameSetRecord, from_message
from segmentation_node.contract import OPERATOR_NODE, SEGMENTATION_NODE
from segmentation_node.perception.intent import resolve_intent
from segmentation_node.perception.ontology import load_ontology
from segmentation_node.regression import frame_set_stamp, recorded_images, synchronized
from segmentation_node.ros.camera_rig import CameraRig
from segmentation_node.ros.messages import endpoint_qos, nanoseconds
from segmentation_node.ros.stand_in_gate import publish_stand_in_gate
from workcell_segmentation.msg import ActiveIntent, FrameSetResult

REPLAY_OPERATOR = "regression_replay"


@dataclass(frozen=True)
class ReplayOutcome:
    records: list[FrameSetRecord]
    frame_sets_sent: int
    seconds: float


def _image(recorded) -> Image:
    header = Header(frame_id=recorded.header.frame_id)
    header.stamp.sec, header.stamp.nanosec = recorded.header.stamp.sec, recorded.header.stamp.nanosec
    return Image(header=header, height=recorded.height, width=recorded.width, encoding=recorded.encoding,
                 is_bigendian=recorded.is_bigendian, step=recorded.step, data=recorded.data.tobytes())


class BagReplayer(Node):
    def __init__(self, cameras: list[str], intent_text: str, namespace: str = ""):
        super().__init__("regression_replay", namespace=namespace)
        ontology = load_ontology()
        resolve_intent(intent_text, ontology)  # refuse a bad intent here, not silently in the node
        self.rig = CameraRig(self, cameras)
        self.results: dict[int, FrameSetResult] = {}
        self.create_subscription(FrameSetResult, "frame_set", self._on_result,
                                 endpoint_qos(SEGMENTATION_NODE, "frame_set"))
        now = self.get_clock().now().to_msg()
        gate = publish_stand_in_gate(self, REPLAY_OPERATOR, "regression replay")
        intent = self.create_publisher(ActiveIntent, "active_intent", endpoint_qos(OPERATOR_NODE, "active_intent"))
        intent.publish(ActiveIntent(header=Header(stamp=now), sequence=1, operator_id=REPLAY_OPERATOR,
                                    text=intent_text, ontology_version=ontology.version))
        self._keep = (gate, intent)

    def _on_result(self, message: FrameSetResult) -> None:
        self.results[nanoseconds(message.header.stamp)] = message

    def wait_for_node(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.rig.connected():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no segmentation node subscribes to {', '.join(self.rig.publishers)} within "
                                   f"{timeout_s:g} s (namespace / remapping?)")
            rclpy.spin_once(self, timeout_sec=0.05)
        settle = time.monotonic() + 1.0  # latched gate and intent reach the node
        while time.monotonic() < settle:
            rclpy.spin_once(self, timeout_sec=0.05)

    def replay(self, images: list[tuple[int, str, object]], rate: float, settle_s: float) -> ReplayOutcome:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        started = time.monotonic()
        first = images[0][0] if images else 0
        for timestamp, camera, recorded in images:
            due = started + (timestamp - first) / 1e9 / rate
            while (left := due - time.monotonic()) > 0:
                rclpy.spin_once(self, timeout_sec=min(left, 0.01))
            self.rig.publish(camera, _image(recorded))
        # The frame sets the node can make: the same synchronizer over the same images.
        frame_sets = [frame_set_stamp(s) for s in synchronized(images, list(self.rig.publishers))]
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline and not all(stamp in self.results for stamp in frame_sets):
            rclpy.spin_once(self, timeout_sec=0.05)
        records = [from_message(self.results[stamp]) for stamp in frame_sets if stamp in self.results]
        return ReplayOutcome(records, len(frame_sets), time.monotonic() - started)


def replay_bag(bag: Path, cameras: list[str], intent_text: str, rate: float, namespace: str = "",
               wait_s: float = 60.0, settle_s: float = 15.0) -> ReplayOutcome:
    images = list(recorded_images(bag, cameras))
    rclpy.init()
    try:
        node = BagReplayer(cameras, intent_text, namespace)
        try:
            node.wait_for_node(wait_s)
            return node.replay(images, rate, settle_s)
        finally:
            node.destroy_node()
    finally:
        rclpy.try_shutdown()
