"""workcell_demo_ros: the main job on the embedded default, over real DDS.

Starts the operator_intent and segmentation nodes as their own processes, replays the bundled
synthetic 3-view recording (rosbag2) into them as the cameras would, and plays a grasp planner
that picks only what its PlannerGuard accepts (and prints why it waits otherwise) and an
operator who resumes, changes the intent ("defective items only") and approves after the hand
has left. Writes the nodes' overlay images of the key moments and a summary to the output folder.

The story follows what the nodes answer, never the clock, so that a slow or loaded machine tells
the same one: the cameras stream the current recorded frame set at the recording's rate (the same
images again, restamped, while the node is behind), and the replay moves on to the next one only
once a result shows the current one. It holds at the first frame set until the operator has
resumed the cell, at the intent change until a result carries the new intent, and at the end
until the cell runs again after the approval; each hold has a deadline that fails the demo with
what it was waiting for.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image

from segmentation_node.atomic_io import atomic_write_bytes
from segmentation_node.bag_records import read_messages
from segmentation_node.contract import SEGMENTATION_NODE, CameraStatus, Command, Reason, Role
from segmentation_node.contract import GateState as State
from segmentation_node.demo import (
    EMBEDDED_DEFAULT, FIRST_INTENT, INTENT_CHANGE_FRAME, SECOND_INTENT, cached_classifier, cached_scene,
    default_cache_dir, scene_key)
from segmentation_node.image_codec import view
from segmentation_node.planner_guard import GuardDecision
from segmentation_node.ros.camera_rig import CameraRig
from segmentation_node.ros.messages import endpoint_qos, nanoseconds
from segmentation_node.ros.planner_guard import GuardedResults
from segmentation_node.ros.services import call
from segmentation_node.synthetic.classical_setup import commission
from segmentation_node.synthetic.scene import ClipConfig, generate_clip
from workcell_segmentation.msg import FrameSetResult, GateState, OperatorCommand, OperatorIntent
from workcell_segmentation.srv import GateCommand, SetIntent

OPERATOR_ID = "demo-operator"
SERVICE_TIMEOUT_S = 5.0
NODES_UP_TIMEOUT_S = 60.0
STEP_TIMEOUT_S = 30.0  # for each hold of the story: far above what a loaded 2-core machine needs
# The planner's guard: images are restamped at replay, so the source age is the node's latency;
# the gate heartbeat comes every 0.5 s by default.
PLANNER_MAX_AGE_S = 1.5
PLANNER_GATE_TIMEOUT_S = 2.0


@dataclass
class Log:
    lines: list[str] = field(default_factory=list)
    quiet: bool = False

    def say(self, text: str) -> None:
        self.lines.append(text)
        if not self.quiet:
            print(text, flush=True)


def _view_stamp_ns(result: FrameSetResult) -> int:
    """Newest camera stamp the result shows; 0 for the watchdog's results, which show no images."""
    return max((nanoseconds(v.header.stamp) for v in result.views), default=0)


class DemoCell(Node):
    """Cameras (replay), a grasp planner (prints decisions) and an operator (service calls)."""

    def __init__(self, cameras: list[str], period_s: float, processes: dict[str, subprocess.Popen], logs: Path,
                 log: Log):
        super().__init__("workcell_demo")
        self.cameras, self.period_s, self.processes, self.logs, self.log = cameras, period_s, processes, logs, log
        self.rig = CameraRig(self, cameras)
        self.showing: dict[str, Image] = {}
        self.shown_since_ns: int | None = None  # stamp of the first publication of `showing`
        self.next_publish_s = 0.0
        self.received: list[tuple[FrameSetResult, GuardDecision]] = []
        self.newest_view_ns = 0
        self.gate: GateState | None = None
        self.last_answer = "none yet"
        self.intent_sequence: int | None = None  # ActiveIntent.sequence of the operator's intent change
        self.approved_epoch: int | None = None  # gate epoch the operator's approval opened
        self._operator_read = 0  # how many of `received` the operator has acted on
        self.overlays: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        GuardedResults(self, self._on_result, max_age_s=PLANNER_MAX_AGE_S, gate_timeout_s=PLANNER_GATE_TIMEOUT_S,
                       on_gate=self._on_gate)
        for camera in cameras:
            self.create_subscription(Image, f"{camera}/overlay", lambda m, c=camera: self._on_overlay(c, m),
                                     endpoint_qos(SEGMENTATION_NODE, "{camera}/overlay"))
        self.intent_client = self.create_client(SetIntent, "set_intent")
        self.gate_client = self.create_client(GateCommand, "gate_command")

    # --- the cameras --------------------------------------------------------------------------------
    def show(self, frame_set: dict[str, bytes]) -> None:
        """From the next camera tick on, stream this recorded frame set."""
        self.showing = {camera: deserialize_message(raw, Image) for camera, raw in frame_set.items()}
        self.shown_since_ns = None

    def shown(self) -> bool:
        """Whether a result shows the frame set being streamed (or a later publication of it)."""
        return self.shown_since_ns is not None and self.newest_view_ns >= self.shown_since_ns

    def _stream(self) -> None:
        """A camera tick, at the recording's rate: the frame set on show, stamped now."""
        if not self.showing or time.monotonic() < self.next_publish_s:
            return
        self.next_publish_s = time.monotonic() + self.period_s
        stamp = self.rig.publish_now(self.showing)
        if self.shown_since_ns is None:
            self.shown_since_ns = stamp

    def stream_until(self, condition: Callable[[], bool], what: str, timeout_s: float = STEP_TIMEOUT_S) -> None:
        """Stream the cameras and let the operator act on each result until `condition()`;
        RuntimeError saying what was awaited after `timeout_s` or when a node has exited."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            exited = [name for name, process in self.processes.items() if process.poll() is not None]
            if exited:
                raise RuntimeError(f"{', '.join(exited)} exited while waiting for {what}; see {self.logs}")
            if time.monotonic() > deadline:
                gate = f"{State(self.gate.state).name} ({self.gate.reason})" if self.gate else "never heard"
                raise RuntimeError(f"no {what} within {timeout_s:g} s: gate {gate}; last operator answer: "
                                   f"{self.last_answer}; see {self.logs}")
            self._stream()
            rclpy.spin_once(self, timeout_sec=0.01)
            self._operate()

    # --- the grasp planner --------------------------------------------------------------------------
    def _on_result(self, result: FrameSetResult, decision: GuardDecision) -> None:
        self.received.append((result, decision))
        self.newest_view_ns = max(self.newest_view_ns, _view_stamp_ns(result))
        if decision.accepted:
            best = max((i for v in result.views for i in v.instances if i.role == Role.TARGET),
                       key=lambda i: i.score, default=None)
            what = f"PICK {best.label}#{best.track_id} {' '.join(best.attributes)} (score {best.score:.2f})" \
                if best else "PICK (no target?)"
        else:
            what = f"WAIT: {decision.reason}"
        self.log.say(f"  planner  frame set {result.sequence:3d}: {what}")

    def _on_gate(self, message: GateState) -> None:
        # Heartbeats repeat the transition the cell is in: only a new transition is news.
        if self.gate is None or message.transition_count != self.gate.transition_count:
            self.log.say(f"  gate     {State(message.previous_state).name} -> {State(message.state).name} "
                         f"by {message.operator_id}: {message.reason}")
        self.gate = message

    def _on_overlay(self, camera: str, message: Image) -> None:
        key = (message.header.stamp.sec, message.header.stamp.nanosec)
        self.overlays.setdefault(key, {})[camera] = np.array(view(message))

    # --- the operator -------------------------------------------------------------------------------
    def _operate(self) -> None:
        """The operator reads every result once and acts on what it shows of the cell under the
        gate's current stop (a result decided under an older gate epoch says nothing about it):
        RESUME a PAUSED or FAULT cell once every camera shows OK, APPROVE once the hand that
        stopped it is gone. A refusal is retried on the next result; the holds' deadlines bound it."""
        while self._operator_read < len(self.received):
            result, _ = self.received[self._operator_read]
            self._operator_read += 1
            gate = self.gate
            if gate is None or result.gate_epoch != gate.transition_count or not _view_stamp_ns(result):
                continue
            if gate.state in (State.PAUSED, State.FAULT) and len(result.views) == len(self.cameras) \
                    and all(v.camera_status == CameraStatus.OK for v in result.views):
                self.command(Command.RESUME, "every camera OK")
            elif gate.state == State.AWAITING_APPROVAL and Reason.AUTO_PAUSE_CLASS not in result.reason_codes:
                answer = self.command(Command.APPROVE, "hand gone, cell checked")
                if answer.accepted:
                    self.approved_epoch = answer.state.transition_count

    def command(self, kind: Command, reason: str):
        answer = call(self, self.gate_client, GateCommand.Request(
            command=OperatorCommand(command=int(kind), operator_id=OPERATOR_ID, reason=reason)), SERVICE_TIMEOUT_S)
        self.last_answer = f"{kind.name.lower()}: {'accepted' if answer.accepted else 'refused'} ({answer.reason})"
        self.log.say(f"  operator {self.last_answer}")
        return answer

    def change_intent(self, text: str) -> None:
        answer = call(self, self.intent_client, SetIntent.Request(
            intent=OperatorIntent(operator_id=OPERATOR_ID, text=text)), SERVICE_TIMEOUT_S)
        self.log.say(f"  operator intent '{text}': {'accepted' if answer.accepted else 'refused'} ({answer.reason})")
        if not answer.accepted:
            raise RuntimeError(f"the operator_intent node refused the intent '{text}': {answer.reason}")
        self.intent_sequence = answer.active.sequence

    def running(self) -> bool:
        return self.gate is not None and self.gate.state == State.RUNNING


def recorded_frame_sets(bag: Path, cameras: list[str]) -> list[dict[str, bytes]]:
    """The camera images of the recording, grouped into frame sets by stamp (raw CDR)."""
    sets: dict[int, dict[str, bytes]] = {}
    for timestamp, topic, raw in read_messages(bag, [f"/{camera}/image_raw" for camera in cameras], "the cameras",
                                               deserialize=False):
        sets.setdefault(timestamp, {})[topic.split("/")[1]] = raw
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
    nodes = {
        "operator_intent": _start(
            "segmentation_node.ros.operator_node", out / "logs/operator_intent.log",
            "-p", f"state_file:={out / 'state/gate.json'}", "-p", f"transition_log:={out / 'state/gate.jsonl'}",
            "-p", f"allowed_operators:=[{OPERATOR_ID}]", "-p", f"initial_intent:={FIRST_INTENT}"),
        "segmentation": _start(
            "segmentation_node.ros.segmentation", out / "logs/segmentation.log",
            "-p", f"commissioning_file:={commissioning}", "-p", "publish_overlay:=true", "-p", "stale_after_s:=1.5",
            "-p", f"cameras:=[{', '.join(cameras)}]"),
    }
    rclpy.init()
    cell = DemoCell(cameras, 1.0 / (config.rate_hz * rate_factor), nodes, out / "logs", log)
    try:
        frame_sets = recorded_frame_sets(scene_dir / "bag", cameras)
        cell.stream_until(cell.rig.connected,
                          "segmentation node subscribing to the cameras", NODES_UP_TIMEOUT_S)
        log.say(f"replaying {len(frame_sets)} frame sets of {len(cameras)} cameras at "
                f"{config.rate_hz * rate_factor:g} Hz into the segmentation node")
        for index, frame_set in enumerate(frame_sets):
            if index == INTENT_CHANGE_FRAME:
                cell.change_intent(SECOND_INTENT)
            cell.show(frame_set)
            events = ", ".join(clip.frames[index].events)
            log.say(f"t={index / config.rate_hz:4.1f}s frame {index:2d}{'  [' + events + ']' if events else ''}")
            cell.stream_until(cell.shown, f"result showing frame {index}")
            if index == 0:
                cell.stream_until(cell.running,
                                  "RUNNING gate (the operator resumes once a result shows every camera OK)")
            if index == INTENT_CHANGE_FRAME:
                cell.stream_until(lambda: any(r.intent_sequence == cell.intent_sequence for r, _ in cell.received),
                                  f"result decided with the intent '{SECOND_INTENT}'")
        cell.stream_until(cell.running, "RUNNING gate after the recording "
                                        "(the operator approves once a result no longer shows the hand)")
        moments = _key_moments(cell.received, cell.intent_sequence, cell.approved_epoch)
        _write_outputs(out, cell, moments, log)
        return 0
    finally:
        cell.destroy_node()
        rclpy.try_shutdown()
        for node in nodes.values():
            node.terminate()
            node.wait(timeout=15)


def _key_moments(received: list[tuple[FrameSetResult, GuardDecision]], intent_sequence: int | None,
                 approved_epoch: int | None) -> dict[str, int]:
    """Stamps of the frame sets worth a picture, from what the nodes answered and the planner accepted."""
    def first(condition):
        return next((nanoseconds(r.header.stamp) for r, d in received if condition(r, d)), None)

    found = {
        "first actionable": first(lambda r, d: d.accepted),
        "intent changed": first(lambda r, d: r.intent_sequence == intent_sequence and r.views and r.views[0].instances),
        "hand in the cell": first(lambda r, d: Reason.AUTO_PAUSE_CLASS in r.reason_codes),
        "after approval": first(lambda r, d: approved_epoch is not None and d.accepted
                                and r.gate_epoch >= approved_epoch),
        "end": nanoseconds(received[-1][0].header.stamp) if received else None,
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
    actionable = sum(r.actionable for r, _ in cell.received)
    accepted = sum(d.accepted for _, d in cell.received)
    header = [
        "# Workcell demo over DDS: embedded default scene, classical CPU backend", "",
        f"- frame set results: {len(cell.received)}, actionable: {actionable}, accepted by the planner's guard: "
        f"{accepted}",
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
