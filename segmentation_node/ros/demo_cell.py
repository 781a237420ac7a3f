"""workcell_demo_ros: the main job on the embedded default, over real DDS.

Starts the operator_intent and segmentation nodes as their own processes, replays the bundled
synthetic 3-view recording (rosbag2) into them as the cameras would, and plays a grasp planner
that prints what it would pick and why (or why not) and an operator who resumes, changes the
intent ("defective items only") and approves after the hand has left. Writes the nodes' overlay
images of the key moments and a summary to the output folder.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import Image

from segmentation_node.atomic_io import atomic_write_bytes
from segmentation_node.contract import OPERATOR_NODE, SEGMENTATION_NODE, Command, Reason, Role
from segmentation_node.contract import GateState as State
from segmentation_node.demo import (
    EMBEDDED_DEFAULT, FIRST_INTENT, INTENT_CHANGE_FRAME, SECOND_INTENT, cached_classifier, cached_scene,
    default_cache_dir, scene_key)
from segmentation_node.image_codec import view
from segmentation_node.ros.messages import endpoint_qos, nanoseconds, stamp_of
from segmentation_node.ros.services import call
from segmentation_node.synthetic.classical_setup import commission
from segmentation_node.synthetic.scene import ClipConfig, generate_clip
from workcell_segmentation.msg import FrameSetResult, GateState, OperatorCommand, OperatorIntent
from workcell_segmentation.srv import GateCommand, SetIntent

OPERATOR_ID = "demo-operator"
SERVICE_TIMEOUT_S = 5.0


@dataclass
class Log:
    lines: list[str] = field(default_factory=list)
    quiet: bool = False

    def say(self, text: str) -> None:
        self.lines.append(text)
        if not self.quiet:
            print(text, flush=True)


class DemoCell(Node):
    """Cameras (replay), a grasp planner (prints decisions) and an operator (service calls)."""

    def __init__(self, cameras: list[str], log: Log):
        super().__init__("workcell_demo")
        self.cameras, self.log = cameras, log
        reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.camera_pubs = {c: self.create_publisher(Image, f"{c}/image_raw", reliable) for c in cameras}
        self.results: list[FrameSetResult] = []
        self.gate: GateState | None = None
        self.overlays: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        self.create_subscription(FrameSetResult, "frame_set", self._on_result, endpoint_qos(SEGMENTATION_NODE, "frame_set"))
        self.create_subscription(GateState, "gate_state", self._on_gate, endpoint_qos(OPERATOR_NODE, "gate_state"))
        for camera in cameras:
            self.create_subscription(Image, f"{camera}/overlay", lambda m, c=camera: self._on_overlay(c, m),
                                     endpoint_qos(SEGMENTATION_NODE, "{camera}/overlay"))
        self.intent_client = self.create_client(SetIntent, "set_intent")
        self.gate_client = self.create_client(GateCommand, "gate_command")

    # --- the grasp planner --------------------------------------------------------------------------
    def _on_result(self, result: FrameSetResult) -> None:
        self.results.append(result)
        if result.actionable:
            best = max((i for v in result.views for i in v.instances if i.role == Role.TARGET),
                       key=lambda i: i.score, default=None)
            what = f"PICK {best.label}#{best.track_id} {' '.join(best.attributes)} (score {best.score:.2f})" \
                if best else "PICK (no target?)"
        else:
            what = "WAIT: " + "; ".join(result.reasons)
        self.log.say(f"  planner  frame set {result.sequence:3d}: {what}")

    def _on_gate(self, message: GateState) -> None:
        self.gate = message
        self.log.say(f"  gate     {State(message.previous_state).name} -> {State(message.state).name} "
                     f"by {message.operator_id}: {message.reason}")

    def _on_overlay(self, camera: str, message: Image) -> None:
        key = (message.header.stamp.sec, message.header.stamp.nanosec)
        self.overlays.setdefault(key, {})[camera] = np.array(view(message))

    # --- the operator -------------------------------------------------------------------------------
    def command(self, kind: Command, reason: str):
        answer = call(self, self.gate_client, GateCommand.Request(
            command=OperatorCommand(command=int(kind), operator_id=OPERATOR_ID, reason=reason)), SERVICE_TIMEOUT_S)
        self.log.say(f"  operator {kind.name.lower()}: {'accepted' if answer.accepted else 'refused'} ({answer.reason})")
        return answer.accepted

    def intent(self, text: str) -> bool:
        answer = call(self, self.intent_client, SetIntent.Request(
            intent=OperatorIntent(operator_id=OPERATOR_ID, text=text)), SERVICE_TIMEOUT_S)
        self.log.say(f"  operator intent '{text}': {'accepted' if answer.accepted else 'refused'} ({answer.reason})")
        return answer.accepted

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(self, timeout_sec=0.01)


def recorded_frame_sets(bag: Path, cameras: list[str]) -> list[dict[str, bytes]]:
    """The camera images of the recording, grouped into frame sets by stamp (raw CDR)."""
    sets: dict[int, dict[str, bytes]] = {}
    with Reader(bag) as reader:
        wanted = [c for c in reader.connections if c.topic in {f"/{cam}/image_raw" for cam in cameras}]
        for connection, timestamp, raw in reader.messages(connections=wanted):
            sets.setdefault(timestamp, {})[connection.topic.split("/")[1]] = raw
    return [sets[stamp] for stamp in sorted(sets)]


def run(out: Path, cache: Path, rate_factor: float, quiet: bool, config: ClipConfig = EMBEDDED_DEFAULT) -> int:
    clip = generate_clip(config)
    cameras = [c.name for c in clip.cameras]
    scene_dir, _ = cached_scene(config, cache, progress=not quiet)
    commissioning = cache / "commissioning" / f"{scene_key(config)}.npz"
    if not commissioning.exists():
        commission(clip, cached_classifier(config, cache)).save(commissioning)
    shutil.rmtree(out, ignore_errors=True)
    (out / "logs").mkdir(parents=True)
    log = Log(quiet=quiet)
    nodes = [
        _start("segmentation_node.ros.operator_node", out / "logs/operator_intent.log",
               "-p", f"state_file:={out / 'state/gate.json'}", "-p", f"transition_log:={out / 'state/gate.jsonl'}",
               "-p", f"allowed_operators:=[{OPERATOR_ID}]", "-p", f"initial_intent:={FIRST_INTENT}"),
        _start("segmentation_node.ros.segmentation", out / "logs/segmentation.log",
               "-p", f"commissioning_file:={commissioning}", "-p", "publish_overlay:=true", "-p", "stale_after_s:=1.5",
               "-p", f"cameras:=[{', '.join(cameras)}]"),
    ]
    rclpy.init()
    cell = DemoCell(cameras, log)
    try:
        frame_sets = recorded_frame_sets(scene_dir / "bag", cameras)
        deadline = time.monotonic() + 60
        while not all(p.get_subscription_count() for p in cell.camera_pubs.values()):
            if time.monotonic() > deadline or any(n.poll() is not None for n in nodes):
                raise RuntimeError(f"the nodes did not come up; see {out / 'logs'}")
            cell.spin_for(0.1)
        log.say(f"replaying {len(frame_sets)} frame sets of {len(cameras)} cameras at "
                f"{config.rate_hz * rate_factor:g} Hz into the segmentation node")
        period = 1.0 / (config.rate_hz * rate_factor)
        resumed, intent_changed_ns, approved_ns = False, None, None
        for index, frame_set in enumerate(frame_sets):
            stamp = time.time_ns()
            for camera, raw in frame_set.items():
                message = deserialize_message(raw, Image)
                message.header.stamp = stamp_of(stamp)
                cell.camera_pubs[camera].publish(message)
            events = ", ".join(clip.frames[index].events)
            log.say(f"t={index / config.rate_hz:4.1f}s frame {index:2d}{'  [' + events + ']' if events else ''}")
            cell.spin_for(period * 0.5)
            if not resumed and cell.results:
                resumed = cell.command(Command.RESUME, "demo start")
            if index == INTENT_CHANGE_FRAME and cell.intent(SECOND_INTENT):
                intent_changed_ns = time.time_ns()
            latest = cell.results[-1] if cell.results else None
            if cell.gate is not None and cell.gate.state == State.AWAITING_APPROVAL and latest is not None \
                    and Reason.AUTO_PAUSE_CLASS not in latest.reason_codes:
                if cell.command(Command.APPROVE, "hand gone, cell checked"):
                    approved_ns = time.time_ns()
            cell.spin_for(max(0.0, period * 0.5))
        cell.spin_for(2.0)
        moments = _key_moments(cell.results, intent_changed_ns, approved_ns)
        _write_outputs(out, cell, moments, log)
        return 0
    finally:
        cell.destroy_node()
        rclpy.try_shutdown()
        for node in nodes:
            node.terminate()
            node.wait(timeout=15)


def _key_moments(results: list[FrameSetResult], intent_changed_ns, approved_ns) -> dict[str, int]:
    """Stamps of the frame sets worth a picture, from what the nodes answered."""
    def first(condition):
        return next((nanoseconds(r.header.stamp) for r in results if condition(r)), None)

    after = lambda r, t: t is not None and nanoseconds(r.header.stamp) > t  # noqa: E731
    found = {
        "first actionable": first(lambda r: r.actionable),
        "intent changed": first(lambda r: after(r, intent_changed_ns) and r.views and r.views[0].instances),
        "hand in the cell": first(lambda r: Reason.AUTO_PAUSE_CLASS in r.reason_codes),
        "after approval": first(lambda r: after(r, approved_ns) and r.actionable),
        "end": nanoseconds(results[-1].header.stamp) if results else None,
    }
    return {moment: stamp for moment, stamp in found.items() if stamp is not None}


def _start(module: str, log_path: Path, *ros_args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module, "--ros-args", *ros_args],
                            stdout=open(log_path, "w"), stderr=subprocess.STDOUT)


def _write_outputs(out: Path, cell: DemoCell, moments: dict[str, int], log: Log) -> None:
    """One row of overlays per key moment: per camera the first overlay at or after it (overlays
    are best effort, so the cameras of one row may come from neighbouring frame sets)."""
    rows = []
    for moment, stamp_ns in sorted(moments.items(), key=lambda item: item[1]):
        tiles = []
        for camera in cell.cameras:
            later = sorted(k for k, images in cell.overlays.items()
                           if camera in images and k[0] * 10**9 + k[1] >= stamp_ns)
            tiles.append(cell.overlays[later[0]][camera] if later else None)
        if all(tile is None for tile in tiles):
            continue
        shape = next(tile.shape for tile in tiles if tile is not None)
        row = np.concatenate([tile if tile is not None else np.full(shape, 60, np.uint8) for tile in tiles], axis=1)
        cv2.putText(row, moment, (8, row.shape[0] - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (255, 255, 0), 2, cv2.LINE_AA)
        rows.append(row)
        ok, png = cv2.imencode(".png", cv2.cvtColor(row, cv2.COLOR_RGB2BGR))
        if ok:
            atomic_write_bytes(out / f"overlay_{moment.replace(' ', '_')}.png", png.tobytes())
    if rows:
        ok, png = cv2.imencode(".png", cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))
        if ok:
            atomic_write_bytes(out / "overview.png", png.tobytes())
    actionable = sum(r.actionable for r in cell.results)
    header = [
        "# Workcell demo over DDS: embedded default scene, classical CPU backend", "",
        f"- frame set results: {len(cell.results)}, actionable: {actionable}",
        f"- key moments ({', '.join(moments)}): `overlay_<moment>.png`, all in `overview.png`",
        f"- node logs: `{out / 'logs'}`; gate transitions: `{out / 'state/gate.jsonl'}`", "", "## What happened", "",
        "```"]
    atomic_write_bytes(out / "summary.md", "\n".join(header + log.lines + ["```", ""]).encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workcell_demo_ros", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    parser.add_argument("--cache", type=Path, default=default_cache_dir())
    parser.add_argument("--rate-factor", type=float, default=0.5, help="replay speed relative to the recording")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        return run(args.out, args.cache, args.rate_factor, args.quiet)
    except (RuntimeError, TimeoutError) as error:
        print(f"workcell_demo_ros: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
