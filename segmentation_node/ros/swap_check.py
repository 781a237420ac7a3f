"""The last step of workcell_flywheel_cycle: a running segmentation node (its own process, real
DDS) serves a registry model, swaps to the promoted one through `swap_model`, and rolls back;
the gate state the node acts on is the same before and after each swap."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import rclpy
from rclpy.node import Node
from std_msgs.msg import Header

from segmentation_node.contract import SEGMENTATION_NODE
from segmentation_node.contract import GateState as State
from segmentation_node.registry import ModelRegistry
from segmentation_node.ros.camera_rig import CameraRig
from segmentation_node.ros.messages import endpoint_qos, image_message
from segmentation_node.ros.services import call
from segmentation_node.ros.stand_in_gate import publish_stand_in_gate
from segmentation_node.synthetic.render import render_frame_set
from segmentation_node.synthetic.scene import ClipConfig, generate_clip
from workcell_segmentation.msg import FrameSetResult
from workcell_segmentation.srv import SwapModel

TIMEOUT_S = 120.0


class _Cell(Node):
    def __init__(self, config: ClipConfig):
        super().__init__("swap_check")
        clip = generate_clip(config)
        self.cameras = [camera.name for camera in clip.cameras]
        self.frame_sets = [[image_message(Header(frame_id=r.camera.frame_id), r.image, "rgb8")
                            for r in render_frame_set(clip, i)] for i in range(min(4, config.frames))]
        self.rig = CameraRig(self, self.cameras, depth=2)
        self.results: list[FrameSetResult] = []
        self.create_subscription(FrameSetResult, "frame_set", self.results.append,
                                 endpoint_qos(SEGMENTATION_NODE, "frame_set"))
        self._gate = publish_stand_in_gate(self, "swap_check", "swap check")
        self._sent = 0

    def serving(self, version: str) -> FrameSetResult:
        """Stream frame sets until a processed result says `version` serves."""
        deadline = time.monotonic() + TIMEOUT_S
        seen = len(self.results)
        while time.monotonic() < deadline:
            self.rig.publish_now(dict(zip(self.cameras, self.frame_sets[self._sent % len(self.frame_sets)])))
            self._sent += 1
            until = time.monotonic() + 0.5
            while time.monotonic() < until:
                rclpy.spin_once(self, timeout_sec=0.05)
            done = [r for r in self.results[seen:] if r.inference_ms > 0 and r.model_version == version]
            if done:
                return done[-1]
        raise TimeoutError(f"no frame set served by {version} within {TIMEOUT_S:g} s")


def exercise_swap(registry: ModelRegistry, work: Path, promoted: str, deployed: str, config: ClipConfig) -> dict:
    log = open(work / "segmentation_node.log", "w")
    rclpy.init()
    cell = _Cell(config)
    node = subprocess.Popen(
        [sys.executable, "-m", "segmentation_node.ros.segmentation", "--ros-args", "-p", "backend:=sam3",
         "-p", f"model_registry:={registry.root}", "-p", f"model_version:={deployed}",
         "-p", f"cameras:=[{','.join(cell.cameras)}]", "-p", "stale_after_s:=5.0",
         "-p", f"gate_node:={cell.get_fully_qualified_name()}"],
        env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT)
    try:
        before = cell.serving(deployed)
        swapped = call(cell, cell.create_client(SwapModel, "swap_model"), SwapModel.Request(version=""), TIMEOUT_S)
        after = cell.serving(promoted)
        rolled = call(cell, cell.create_client(SwapModel, "swap_model"), SwapModel.Request(rollback=True), TIMEOUT_S)
        back = cell.serving(deployed)
        alive = node.poll() is None
    finally:
        cell.destroy_node()
        rclpy.try_shutdown()
        node.terminate()
        node.wait(timeout=30)
        log.close()
    return {"served_before": before.model_version, "swap": [swapped.accepted, swapped.active_version, swapped.reason],
            "served_after_swap": after.model_version,
            "rollback": [rolled.accepted, rolled.active_version, rolled.reason],
            "served_after_rollback": back.model_version,
            "gate_states": [State(r.gate_state).name for r in (before, after, back)], "node_alive": alive}
