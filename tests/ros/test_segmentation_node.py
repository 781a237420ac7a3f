"""Cameras -> segmentation node -> consumer, with the operator_intent node holding the gate:
three processes over real DDS on loopback, fed by the synthetic 3-view cell."""
import json
import subprocess
import sys
import time

import cv2
import pytest
import rclpy
from pycocotools.coco import COCO
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from segmentation_node.contract import OPERATOR_NODE, SEGMENTATION_NODE, CameraStatus, Command, Reason, Role
from segmentation_node.contract import GateState as State
from segmentation_node.flywheel.shards import list_shards
from segmentation_node.ros.messages import endpoint_qos, nanoseconds, stamp_of
from tests.ros.cell_stream import CAMERAS, make_cell
from tests.ros.cell_stream import send as send_frame_set
from tests.ros.harness import call, node_process, spin_until
from workcell_segmentation.msg import FrameSetResult, GateState, OperatorCommand, OperatorIntent
from workcell_segmentation.srv import GateCommand, SetIntent

@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cell")
    renders, hand = make_cell(folder)
    return folder, renders, hand


@pytest.fixture(scope="module")
def running(cell):
    folder, renders, hand = cell
    operator_args = ("-p", f"state_file:={folder / 'gate.json'}", "-p", f"transition_log:={folder / 'gate.log'}",
                     "-p", "allowed_operators:=[alice]", "-p", "initial_intent:=pick everything")
    segmentation_args = ("-p", f"commissioning_file:={folder / 'cell.npz'}", "-p", "stale_after_s:=1.0",
                         "-p", "publish_overlay:=true", "-p", f"flywheel_dir:={folder / 'flywheel'}",
                         "-p", "flywheel_clip_frames:=2", "-p", "flywheel_every_n:=2",
                         "-p", "flywheel_frame_sets_per_shard:=3", "-p", "flywheel_min_score:=0.6")
    rclpy.init()
    client = Node("segmentation_test_client")
    client.results, client.labels, client.gates = [], [], []
    client.create_subscription(FrameSetResult, "frame_set", client.results.append,
                               endpoint_qos(SEGMENTATION_NODE, "frame_set"))
    client.create_subscription(Image, "cam_top/target_labels", client.labels.append,
                               endpoint_qos(SEGMENTATION_NODE, "{camera}/target_labels"))
    client.create_subscription(GateState, "gate_state", client.gates.append, endpoint_qos(OPERATOR_NODE, "gate_state"))
    # Reliable on our side: big best-effort images lose fragments on a busy loopback.
    camera_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    client.cameras = {c: client.create_publisher(Image, f"{c}/image_raw", camera_qos) for c in CAMERAS}
    try:
        with node_process("segmentation_node.ros.operator_node", *operator_args, log_path=folder / "operator.log"), \
                node_process("segmentation_node.ros.segmentation", *segmentation_args,
                             log_path=folder / "segmentation.log"):
            spin_until(client, lambda: all(p.get_subscription_count() > 0 for p in client.cameras.values()),
                       "the segmentation node's camera subscriptions")
            yield client, renders, hand, folder
    finally:
        client.destroy_node()
        rclpy.try_shutdown()


def send(client, renders, index, **options):
    return send_frame_set(client.cameras, renders, index, **options)


def stream_until(client, renders, frames, condition, what, **options):
    """Publish frame sets at ~4 Hz (cycling through `frames`) until a result published after the
    first of them (a frame set's or the watchdog's) satisfies `condition`."""
    deadline = time.monotonic() + 40
    seen = len(client.results)
    count = 0
    while True:
        assert time.monotonic() < deadline, f"timed out: {what}"
        send(client, renders, frames[count % len(frames)], **options)
        count += 1
        end = time.monotonic() + 0.25
        while time.monotonic() < end:
            rclpy.spin_once(client, timeout_sec=0.02)
        matching = [r for r in client.results[seen:] if condition(r)]
        if matching:
            return matching[-1]


def keep_streaming(client, renders, frames):
    """A `while_waiting` for service calls: a frame set every 0.25 s, so no camera goes stale
    while a call (and the discovery of its client) takes its time."""
    last = [0.0]

    def tick():
        if time.monotonic() - last[0] >= 0.25:
            send(client, renders, frames[0])
            last[0] = time.monotonic()
    return tick


def command_when_clear(client, renders, frames, kind):
    """Keep the cameras streaming and repeat the command until the gate accepts it: the
    operator node refuses while it still holds a camera fault from before the images arrived."""
    deadline = time.monotonic() + 30
    while True:
        send(client, renders, frames[0])
        answer = gate(client, kind, while_waiting=keep_streaming(client, renders, frames))
        if answer.accepted:
            return answer
        assert time.monotonic() < deadline, f"{kind.name} refused: {answer.reason}"
        assert "fault still active" in answer.reason or "in the workspace" in answer.reason, answer.reason
        end = time.monotonic() + 0.25
        while time.monotonic() < end:
            rclpy.spin_once(client, timeout_sec=0.02)


def gate(client, kind, operator="alice", while_waiting=None):
    request = GateCommand.Request(command=OperatorCommand(command=int(kind), operator_id=operator))
    return call(client, GateCommand, "gate_command", request, while_waiting=while_waiting)


def targets(result):
    return {i.label for v in result.views for i in v.instances if i.role == Role.TARGET}


def test_cameras_to_consumer_with_gate_intent_hand_and_faults(running):
    client, renders, hand, _ = running
    calm = [i for i, h in enumerate(hand) if not h][:6]
    hand_frames = [i for i, h in enumerate(hand) if h]

    # 1. Per-view results carry the source stamps and frame ids; paused: nothing actionable.
    sent = set()
    first = stream_until(client, renders, calm, lambda r: r.views and r.views[0].header.frame_id,
                         "a first frame set result", sent=sent)
    stamp = nanoseconds(first.header.stamp)
    assert stamp in sent
    assert [v.camera_name for v in first.views] == CAMERAS
    assert all(v.header.stamp == first.header.stamp for v in first.views)
    assert [v.header.frame_id for v in first.views] == [f"{c}_optical_frame" for c in CAMERAS]
    # Paused, or not heard yet when the first frame set came (the gate node starts alongside).
    assert not first.actionable and {Reason.GATE_NOT_RUNNING, Reason.GATE_LOST} & set(first.reason_codes)
    spin_until(client, lambda: any(l.header.stamp == stamp_of(stamp) for l in client.labels), "label image")
    label = next(l for l in client.labels if l.header.stamp == stamp_of(stamp))
    assert (label.encoding, label.header.frame_id, label.width) == ("mono16", "cam_top_optical_frame", 320)

    # 2. Resume: parts become pickable.
    command_when_clear(client, renders, calm, Command.RESUME)
    ready = stream_until(client, renders, calm, lambda r: r.actionable, "an actionable frame set")
    assert ready.gate_state == State.RUNNING and {"part_a", "part_b"} & targets(ready)
    assert all(i.track_id > 0 for v in ready.views for i in v.instances if i.role == Role.TARGET)

    # 3. An intent change applies to the next frame set after it is accepted.
    answer = call(client, SetIntent, "set_intent",
                  SetIntent.Request(intent=OperatorIntent(operator_id="alice", text="pick part_b")),
                  while_waiting=keep_streaming(client, renders, calm))
    assert answer.accepted
    after = stream_until(client, renders, calm[1:], lambda r: r.intent_sequence == answer.active.sequence,
                         "the first frame set under the new intent")
    assert targets(after) <= {"part_b"}
    assert client.gates[-1].state == State.RUNNING, "cameras kept streaming while the intent was set"

    # 4. A hand stops the cell until an operator approves.
    stopped = stream_until(client, renders, hand_frames, lambda r: Reason.AUTO_PAUSE_CLASS in r.reason_codes,
                           "the hand to be seen")
    assert not stopped.actionable
    spin_until(client, lambda: client.gates and client.gates[-1].state == State.AWAITING_APPROVAL, "auto-pause")
    stopped_at = len(client.results)
    stream_until(client, renders, calm, lambda r: Reason.AUTO_PAUSE_CLASS not in r.reason_codes, "hand gone")
    assert "needs APPROVE" in gate(client, Command.RESUME).reason
    approved_at = len(client.results)
    command_when_clear(client, renders, calm, Command.APPROVE)
    assert not any(r.actionable for r in client.results[stopped_at:approved_at]), "nothing until approval"
    stream_until(client, renders, calm, lambda r: r.actionable, "actionable after approval")

    # 5. A camera that stops: not actionable with the reason, the gate faults; recovery on return.
    stale = stream_until(client, renders, calm, lambda r: Reason.CAMERA_NOT_FRESH in r.reason_codes,
                         "the stale camera to be reported", skip=("cam_right",))
    assert not stale.actionable and "cam_right" in " ".join(stale.reasons)
    spin_until(client, lambda: client.gates[-1].state == State.FAULT, "gate FAULT")
    stream_until(client, renders, calm, lambda r: Reason.CAMERA_NOT_FRESH not in r.reason_codes, "camera back")
    command_when_clear(client, renders, calm, Command.RESUME)
    stream_until(client, renders, calm, lambda r: r.actionable, "actionable after the fault cleared")


@pytest.mark.parametrize("bad, detail", [
    ({"cam_left": {"encoding": "nv12"}}, "unsupported encoding"),
    ({"cam_left": {"width": 200}}, "calibrated for 320x240"),
    ({"cam_left": {"stamp_offset_ns": -10_000_000_000}}, "stamp went back"),
])
def test_bad_input_is_reported_and_the_node_keeps_going(running, bad, detail):
    client, renders, hand, _ = running
    calm = [i for i, h in enumerate(hand) if not h][:3]
    def left_view(result):
        return next(v for v in result.views if v.camera_name == "cam_left")

    rejected = stream_until(client, renders, calm, lambda r: left_view(r).camera_status == CameraStatus.BAD_INPUT,
                            "the bad image to be reported", **bad)
    assert not rejected.actionable and Reason.CAMERA_NOT_FRESH in rejected.reason_codes
    left = left_view(rejected)
    assert detail in left.camera_detail
    assert not any(i for i in left.instances), "nothing from bad data"
    recovered = stream_until(client, renders, calm, lambda r: Reason.CAMERA_NOT_FRESH not in r.reason_codes,
                             "good images again")
    assert all(v.camera_status == CameraStatus.OK for v in recovered.views)


def test_flywheel_keeps_pseudo_labels_and_hard_cases_of_the_run(running):
    """Runs last: the scenario above had a hand (auto-pause); now an operator rejects a result
    through the operator CLI, a separate process."""
    client, renders, hand, folder = running
    calm = [i for i, h in enumerate(hand) if not h][:6]
    send(client, renders, calm[0])
    reject = subprocess.run([sys.executable, "-m", "segmentation_node.ros.operator_cli", "reject",
                             "missed the disc by the clamp", "--operator", "alice", "--namespace", "/"],
                            capture_output=True, text=True, timeout=60)
    assert reject.returncode == 0, reject.stderr
    stream_until(client, renders, calm,
                 lambda _: any(_has_trigger(s, "operator_reject: alice") for s in list_shards(folder / "flywheel")),
                 "the operator-reject hard case to be sealed")
    shards = list_shards(folder / "flywheel")
    assert any(_has_trigger(s, "auto_pause: hand") for s in shards), [s.shard_id for s in shards]
    pseudo = [s for s in shards if s.kind == "pseudo_label"]
    assert pseudo and all(s.frame_sets == 3 for s in pseudo)
    for shard in shards:
        coco = COCO(str(shard.path / "annotations.json"))
        assert all(cv2.imread(str(shard.path / image["file_name"])) is not None for image in coco.dataset["images"])
        for annotation in coco.dataset["annotations"]:
            assert coco.annToMask(annotation).sum() == annotation["area"] > 0


def _has_trigger(shard, text: str) -> bool:
    images = json.loads((shard.path / "annotations.json").read_text())["images"]
    return any(text in trigger for image in images for trigger in image["meta"].get("triggers", []))
