"""Fault suite: the node stays up, nothing becomes actionable while unsafe, the error is clear.

Covered elsewhere: camera drop and return, stamps going back (out of order), wrong encoding and size
(test_segmentation_node.py); oversized intent text and resume by an operator who is not allowed
(test_operator_node.py). Here: backend exceptions, a backend slower than the cameras, command and
intent floods, a camera whose stamps jump ahead, and kill -9 while the flywheel writes.
"""
import contextlib
import json
import signal
import time

import cv2
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy._rclpy_pybind11 import RCLError
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from segmentation_node.contract import OPERATOR_NODE, SEGMENTATION_NODE, Command, Reason, Source
from segmentation_node.contract import GateState as State
from segmentation_node.flywheel.shards import list_shards
from segmentation_node.ros.messages import endpoint_qos
from tests.ros.cell_stream import CAMERAS, make_cell, send
from tests.ros.harness import TIMEOUT_S, call, node_process, spin_until
from workcell_segmentation.msg import FrameSetResult, GateState, OperatorCommand, OperatorIntent
from workcell_segmentation.srv import GateCommand, SetIntent

FAULTY = "tests.ros.faulty_segmentation"


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    renders, hand = make_cell(folder)
    return folder, renders, [i for i, h in enumerate(hand) if not h]


@pytest.fixture()
def client():
    rclpy.init()
    node = Node("fault_suite_client")
    node.results, node.diagnostics, node.gates = [], [], []
    node.create_subscription(FrameSetResult, "frame_set", node.results.append,
                             endpoint_qos(SEGMENTATION_NODE, "frame_set"))
    node.create_subscription(DiagnosticArray, "/diagnostics", node.diagnostics.append,
                             endpoint_qos(SEGMENTATION_NODE, "/diagnostics"))
    node.create_subscription(GateState, "gate_state", node.gates.append, endpoint_qos(OPERATOR_NODE, "gate_state"))
    camera_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    node.cameras = {c: node.create_publisher(Image, f"{c}/image_raw", camera_qos) for c in CAMERAS}
    try:
        yield node
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def segmentation_args(folder, *extra):
    return ("-p", f"commissioning_file:={folder / 'cell.npz'}", "-p", "stale_after_s:=2.0", *extra)


def stream(client, renders, frames, seconds, rate_hz=10.0):
    end = time.monotonic() + seconds
    count = 0
    while time.monotonic() < end:
        send(client.cameras, renders, frames[count % len(frames)])
        count += 1
        next_send = time.monotonic() + 1.0 / rate_hz
        while time.monotonic() < next_send:
            rclpy.spin_once(client, timeout_sec=0.01)
    return count


def wait_for_cameras(client):
    spin_until(client, lambda: all(p.get_subscription_count() > 0 for p in client.cameras.values()),
               "the segmentation node's camera subscriptions", timeout_s=60)


def test_backend_exceptions_fail_safe_and_the_node_recovers(cell, client):
    folder, renders, calm = cell
    with node_process(FAULTY, *segmentation_args(folder), log_path=folder / "raise.log",
                      env={"WORKCELL_FAULT_RAISE_AT": "3,4,5"}) as process:
        wait_for_cameras(client)
        stream(client, renders, calm, seconds=4.0, rate_hz=4.0)
        failed = [r for r in client.results if Reason.MODEL_ERROR in r.reason_codes]
        assert len(failed) == 3, [r.reasons for r in client.results]
        assert all(not r.actionable and any("injected backend fault" in text for text in r.reasons) for r in failed)
        # Nothing from the failed model; the intrusion monitor's regions stay (a crash cannot silence it).
        assert all(i.source == Source.INTRUSION for r in failed for v in r.views for i in v.instances), \
            "no masks from a failed model"
        later = [r for r in client.results if r.sequence > failed[-1].sequence]
        assert later and all(Reason.MODEL_ERROR not in r.reason_codes for r in later)
        assert any(i.source == Source.MODEL for v in later[-1].views for i in v.instances), \
            "the model serves again after the faults"
        assert process.poll() is None


def test_stamps_jumping_ahead_stop_the_cell_until_they_are_consistent_again(cell, client):
    """A camera clock that jumps 2 s ahead cannot be synchronized: nothing actionable, the reason
    says why. Its next true stamps then go back and are refused until they pass the jump."""
    folder, renders, calm = cell
    with node_process("segmentation_node.ros.segmentation", *segmentation_args(folder, "-p", "stale_after_s:=0.5"),
                      log_path=folder / "jump.log") as process:
        wait_for_cameras(client)
        stream(client, renders, calm, seconds=1.5, rate_hz=4.0)
        jumped_at = len(client.results)
        for index in range(4):
            send(client.cameras, renders, calm[index % len(calm)], cam_left={"stamp_offset_ns": 2_000_000_000})
            end = time.monotonic() + 0.25
            while time.monotonic() < end:
                rclpy.spin_once(client, timeout_sec=0.02)
        stream(client, renders, calm, seconds=4.0, rate_hz=4.0)
        during = client.results[jumped_at:]
        blocked = [r for r in during if not r.actionable and (Reason.CAMERA_NOT_FRESH in r.reason_codes)]
        assert blocked and any("cam_left" in " ".join(r.reasons) or "synchronized" in " ".join(r.reasons)
                               for r in blocked), [r.reasons for r in during]
        assert Reason.CAMERA_NOT_FRESH not in client.results[-1].reason_codes, client.results[-1].reasons
        assert process.poll() is None


def test_slow_backend_drops_oldest_and_latency_stays_bounded(cell, client):
    folder, renders, calm = cell
    delay_s = 0.6
    with node_process(FAULTY, *segmentation_args(folder, "-p", "worker_queue:=1"), log_path=folder / "slow.log",
                      env={"WORKCELL_FAULT_DELAY_S": str(delay_s)}) as process:
        wait_for_cameras(client)
        sent = stream(client, renders, calm, seconds=9.0, rate_hz=10.0)
        results = [r for r in client.results if r.inference_ms > 0]
        assert process.poll() is None
    # 10 Hz in, < 2 Hz out: most frame sets are dropped, and what is published is recent. Without
    # the drop-oldest queue the latency would grow by ~0.5 s every second of the stream.
    assert len(results) < sent / 3
    late = [r.latency_ms for r in results[len(results) // 2:]]
    assert max(late) < 1000 * (2 * delay_s + 0.8), late
    assert all(r.inference_ms >= 1000 * delay_s for r in results)


def test_command_and_intent_floods_leave_the_operator_node_answering(cell, client):
    folder, _, _ = cell
    operator_args = ("-p", f"state_file:={folder / 'flood_gate.json'}", "-p",
                     f"transition_log:={folder / 'flood_gate.log'}", "-p", "allowed_operators:=[alice]")
    qos = endpoint_qos(OPERATOR_NODE, "command")
    commands = client.create_publisher(OperatorCommand, "command", qos)
    intents = client.create_publisher(OperatorIntent, "intent", endpoint_qos(OPERATOR_NODE, "intent"))
    with node_process("segmentation_node.ros.operator_node", *operator_args, log_path=folder / "flood.log") as process:
        spin_until(client, lambda: commands.get_subscription_count() > 0 and intents.get_subscription_count() > 0,
                   "the operator node", timeout_s=30)
        started = time.monotonic()
        for index in range(1000):  # ~1000/s of each
            kind = Command.RESUME if index % 2 else Command.PAUSE
            # A reliable writer whose reader lags refuses a write once its history is full
            # ("cannot publish data"): the flooder's problem, not the node's.
            with contextlib.suppress(RCLError):
                commands.publish(OperatorCommand(command=int(kind), operator_id="alice" if index % 3 else "mallory"))
            with contextlib.suppress(RCLError):
                intents.publish(OperatorIntent(operator_id="alice", text="good blocks" if index % 2 else "x" * 10_000))
            while time.monotonic() < started + (index + 1) / 1000.0:
                rclpy.spin_once(client, timeout_sec=0.0005)
        flood_s = time.monotonic() - started
        # The last words win, in order: whatever the flood left, PAUSE then RESUME ends RUNNING.
        publish_once_accepted(client, commands, OperatorCommand(command=int(Command.PAUSE), operator_id="bob",
                                                                reason="flood over"))
        publish_once_accepted(client, commands, OperatorCommand(command=int(Command.RESUME), operator_id="alice",
                                                                reason="after the flood"))
        spin_until(client, lambda: client.gates and client.gates[-1].reason == "after the flood", "the final RESUME",
                   timeout_s=60)
        asked = time.monotonic()
        answer = call(client, GateCommand, "gate_command", GateCommand.Request(
            command=OperatorCommand(command=int(Command.PAUSE), operator_id="mallory", reason="anyone may stop")))
        answered_s = time.monotonic() - asked
        intent = call(client, SetIntent, "set_intent",
                      SetIntent.Request(intent=OperatorIntent(operator_id="alice", text="defective items only")))
        assert process.poll() is None
    assert flood_s < 5.0
    assert answer.accepted and answer.state.state == State.PAUSED and answered_s < 5.0
    assert intent.accepted and intent.active.pick_attributes == ["defective"]


def publish_once_accepted(client, publisher, message):
    """Publish, spinning until the writer has room again after a flood."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            return publisher.publish(message)
        except RCLError:
            assert time.monotonic() < deadline, "the writer never had room again"
            rclpy.spin_once(client, timeout_sec=0.05)


def flywheel_stats(client):
    for array in reversed(client.diagnostics):
        for status in array.status:
            if status.name.endswith("flywheel"):
                return {item.key: item.value for item in status.values}
    return None


def test_kill_9_while_the_flywheel_writes_keeps_every_acknowledged_frame_set(cell, client):
    folder, renders, calm = cell
    flywheel = folder / "kill9_flywheel"
    args = segmentation_args(folder, "-p", f"flywheel_dir:={flywheel}", "-p", "flywheel_every_n:=1",
                             "-p", "flywheel_stable_frames:=1", "-p", "flywheel_min_score:=0.0",
                             "-p", "flywheel_frame_sets_per_shard:=4")
    with node_process("segmentation_node.ros.segmentation", *args, log_path=folder / "kill9.log") as process:
        wait_for_cameras(client)
        deadline = time.monotonic() + 60
        while (stats := flywheel_stats(client)) is None or int(stats["acknowledged"]) < 6:
            assert time.monotonic() < deadline, f"flywheel did not write: {stats}"
            stream(client, renders, calm, seconds=0.5, rate_hz=4.0)
        stream(client, renders, calm, seconds=0.7, rate_hz=4.0)  # keep writing while it dies
        acknowledged = int(flywheel_stats(client)["acknowledged"])
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert any((flywheel / "open").iterdir()), "the kill should interrupt an open shard"
    client.diagnostics.clear()
    with node_process("segmentation_node.ros.segmentation", *args, log_path=folder / "restart.log"):
        spin_until(client, lambda: flywheel_stats(client) is not None, "the restarted node's diagnostics", 60)
        assert int(flywheel_stats(client)["recovered"]) >= 1
    assert not any((flywheel / "open").iterdir()) and not list(flywheel.rglob("*.tmp"))
    frame_sets = 0
    for shard in list_shards(flywheel):
        dataset = json.loads((shard.path / "annotations.json").read_text())
        assert all(cv2.imread(str(shard.path / image["file_name"])) is not None for image in dataset["images"])
        frame_sets += shard.frame_sets
    assert frame_sets >= acknowledged
