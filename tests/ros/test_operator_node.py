"""operator_intent node in its own process, driven over DDS like rqt and a grasp planner would."""
import subprocess
import sys

import pytest
import rclpy
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node

from segmentation_node.contract import OPERATOR_NODE, CameraStatus, Command, Reason, Role
from segmentation_node.contract import GateState as State
from segmentation_node.ros.messages import endpoint_qos
from tests.ros.harness import call, node_process, spin_until
from tests.ros.interface_samples import REPO
from workcell_segmentation.msg import (
    ActiveIntent, FrameSetResult, GateState, InstanceMask, OperatorCommand, OperatorIntent, ViewResult)
from workcell_segmentation.srv import GateCommand, SetIntent

MODULE = "segmentation_node.ros.operator_node"


@pytest.fixture(scope="module")
def client():
    rclpy.init()
    try:
        node = Node("operator_test_client")
        node.gate_states, node.intents = [], []
        node.create_subscription(GateState, "gate_state", node.gate_states.append,
                                 endpoint_qos(OPERATOR_NODE, "gate_state"))
        node.create_subscription(ActiveIntent, "active_intent", node.intents.append,
                                 endpoint_qos(OPERATOR_NODE, "active_intent"))
        node.frame_sets = node.create_publisher(FrameSetResult, "frame_set", endpoint_qos(OPERATOR_NODE, "frame_set"))
        node.commands = node.create_publisher(OperatorCommand, "command", endpoint_qos(OPERATOR_NODE, "command"))
        node.intent_topic = node.create_publisher(OperatorIntent, "intent", endpoint_qos(OPERATOR_NODE, "intent"))
        yield node
        node.destroy_node()
    finally:
        rclpy.try_shutdown()


@pytest.fixture(autouse=True)
def fresh_client(client):
    """Each test starts its own operator node: what an earlier one published is history."""
    client.gate_states.clear()
    client.intents.clear()


def operator_args(tmp_path, *extra):
    return ("-p", f"state_file:={tmp_path / 'gate.json'}", "-p", f"transition_log:={tmp_path / 'gate.log'}",
            "-p", "allowed_operators:=[alice, bob]", *extra)


def wait_state(client, state, what=""):
    spin_until(client, lambda: client.gate_states and client.gate_states[-1].state == state,
               f"gate {state.name} {what}")
    return client.gate_states[-1]


def command(client, kind, operator="alice", reason=""):
    request = GateCommand.Request(command=OperatorCommand(command=int(kind), operator_id=operator, reason=reason))
    return call(client, GateCommand, "gate_command", request)


def frame_set(client, *reasons, hand=False, camera=CameraStatus.OK, detail=""):
    """A result as the segmentation node would publish it, decided under the newest gate epoch."""
    view = ViewResult(camera_name="cam_top", camera_status=int(camera), camera_detail=detail)
    if hand:
        view.instances = [InstanceMask(track_id=5, label="hand", role=int(Role.FORBIDDEN), score=0.9)]
    return FrameSetResult(views=[view], reason_codes=[int(code) for code, _ in reasons],
                          reasons=[text for _, text in reasons], gate_epoch=client.gate_states[-1].transition_count)


def test_gate_and_intent_over_dds(client, tmp_path):
    with node_process(MODULE, *operator_args(tmp_path)):
        start = wait_state(client, State.PAUSED, "at start-up (latched)")
        assert "waiting for an operator" in start.reason

        refused = command(client, Command.RESUME, operator="mallory")
        assert not refused.accepted and "may not resume" in refused.reason
        answer = command(client, Command.RESUME, reason="shift start")
        assert answer.accepted and answer.state.state == State.RUNNING
        assert wait_state(client, State.RUNNING).operator_id == "alice"

        good = call(client, SetIntent, "set_intent",
                    SetIntent.Request(intent=OperatorIntent(operator_id="alice", text="defective items only")))
        assert good.accepted and good.active.sequence == 1 and good.active.pick_attributes == ["defective"]
        spin_until(client, lambda: client.intents and client.intents[-1].sequence == 1, "active intent")
        bad = call(client, SetIntent, "set_intent",
                   SetIntent.Request(intent=OperatorIntent(operator_id="alice", text="pick bolts")))
        assert not bad.accepted and "bolts" in bad.reason and "blocks" in bad.suggestions
        assert bad.active.sequence == 1, "a rejected intent leaves the active one in force"

        # A hand in the frame set stops the cell; only APPROVE (once it is gone) restarts it.
        client.frame_sets.publish(frame_set(client, (Reason.AUTO_PAUSE_CLASS, "hand in the workspace"), hand=True))
        assert wait_state(client, State.AWAITING_APPROVAL, "after a hand").operator_id == "system"
        assert "needs APPROVE" in command(client, Command.RESUME).reason
        early = command(client, Command.APPROVE)
        assert "no frame set decided since this stop" in early.reason, "results from before the stop prove nothing"
        client.frame_sets.publish(frame_set(client, (Reason.AUTO_PAUSE_CLASS, "hand in the workspace"), hand=True))
        spin_until(client, lambda: "still in the workspace" in command(client, Command.APPROVE).reason,
                   "APPROVE refused while the hand is seen")
        client.frame_sets.publish(frame_set(client))
        spin_until(client, lambda: command(client, Command.APPROVE, operator="bob", reason="cell clear").accepted,
                   "APPROVE once a frame set of this stop shows no hand")
        assert wait_state(client, State.RUNNING).operator_id == "bob"

        # A stale camera faults the gate until it clears and someone resumes.
        client.frame_sets.publish(frame_set(client, (Reason.CAMERA_NOT_FRESH, "cam_top: no image for 1.2 s"),
                                            camera=CameraStatus.STALE, detail="no image for 1.2 s"))
        fault = wait_state(client, State.FAULT, "after a stale camera")
        assert "cam_top" in fault.reason and fault.active_faults == ["camera cam_top"]
        assert "fault still active" in command(client, Command.RESUME).reason
        client.frame_sets.publish(frame_set(client))
        spin_until(client, lambda: command(client, Command.RESUME).accepted, "resume after the fault cleared")

        # rqt_publisher path: plain topics, no answer but the published state.
        client.intent_topic.publish(OperatorIntent(operator_id="carol", text="good blocks"))
        spin_until(client, lambda: client.intents[-1].sequence == 2, "intent from the topic")
        assert client.intents[-1].reject_attributes == ["defective"]
        client.intent_topic.publish(OperatorIntent(operator_id="carol", text="x" * 5000))  # oversized: refused
        client.commands.publish(OperatorCommand(command=int(Command.PAUSE), operator_id="carol"))
        assert wait_state(client, State.PAUSED, "after a PAUSE on the topic").operator_id == "carol"
        assert call(client, SetIntent, "set_intent",
                    SetIntent.Request(intent=OperatorIntent(operator_id="a", text="x" * 5000))).accepted is False


def test_restart_comes_back_stopped(client, tmp_path):
    with node_process(MODULE, *operator_args(tmp_path)) as process:
        wait_state(client, State.PAUSED)
        assert command(client, Command.RESUME).accepted
        wait_state(client, State.RUNNING)
        process.kill()  # no goodbye: what was persisted must be enough
        process.wait()
    client.gate_states.clear()
    with node_process(MODULE, *operator_args(tmp_path)):
        restarted = wait_state(client, State.PAUSED, "after the restart")
        assert restarted.previous_state == State.RUNNING and "restarted" in restarted.reason


def test_operator_cli(client, tmp_path):
    with node_process(MODULE, *operator_args(tmp_path)):
        wait_state(client, State.PAUSED)
        run = lambda *args: subprocess.run([sys.executable, "-m", "segmentation_node.ros.operator_cli", *args,
                                            "--namespace", "/"],
                                           cwd=REPO, capture_output=True, text=True, timeout=60)
        resumed = run("resume", "--operator", "alice", "--timeout", "15")
        assert resumed.returncode == 0 and "gate RUNNING" in resumed.stdout
        rejected = run("intent", "pick bolts", "--operator", "alice", "--timeout", "15")
        assert rejected.returncode == 1 and "REJECTED" in rejected.stdout and "blocks" in rejected.stdout
        status = run("status", "--timeout", "15")
        assert status.returncode == 0 and "gate: RUNNING" in status.stdout
    down = subprocess.run([sys.executable, "-m", "segmentation_node.ros.operator_cli", "pause", "--timeout", "1",
                           "--namespace", "/"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert down.returncode == 3 and "is the operator_intent node running" in down.stderr


def test_pause_is_never_refused_and_the_allowlist_cannot_be_changed_from_the_network(client, tmp_path):
    with node_process(MODULE, *operator_args(tmp_path)):
        wait_state(client, State.PAUSED)
        request = SetParameters.Request(parameters=[Parameter(name="allowed_operators", value=ParameterValue(
            type=ParameterType.PARAMETER_STRING_ARRAY, string_array_value=["mallory"]))])
        answer = None
        for _ in range(5):  # a first call can lose its answer while the service's reply path is still matching
            try:
                answer = call(client, SetParameters, f"/{OPERATOR_NODE}/set_parameters", request, timeout_s=4.0)
                break
            except AssertionError:
                continue
        assert answer is not None, "set_parameters never answered"
        assert not answer.results[0].successful and "read-only" in answer.results[0].reason
        assert "may not resume" in command(client, Command.RESUME, operator="mallory").reason
        # ("alice\x00evil" cannot be tested here: ROS strings end at the NUL, the node receives "alice".)
        for variant in ("alice ", "alice\n", "ａｌｉｃｅ", "ali\u200bce", "alice\x1b[2K"):
            resumed = command(client, Command.RESUME, operator=variant)
            assert resumed.accepted == (variant.strip() in ("alice", "ａｌｉｃｅ")), (variant, resumed.reason)
            command(client, Command.PAUSE)
        for operator, reason in (("", ""), ("o" * 100, ""), ("carol\nFORGED LINE", "r" * 5000)):
            assert command(client, Command.RESUME).accepted
            paused = command(client, Command.PAUSE, operator=operator, reason=reason)
            assert paused.accepted and paused.state.state == State.PAUSED, paused.reason
            assert "\n" not in paused.state.operator_id and len(paused.state.reason) <= 256
        heartbeats = len(client.gate_states)
        spin_until(client, lambda: len(client.gate_states) >= heartbeats + 2, "two heartbeats")
        beat = client.gate_states[-1]
        assert beat.heartbeat_period_s == pytest.approx(0.5) and beat.transition_count == paused.state.transition_count


def test_a_restart_keeps_the_auto_pause_cause_until_a_fresh_frame_set(client, tmp_path):
    with node_process(MODULE, *operator_args(tmp_path)) as process:
        wait_state(client, State.PAUSED)
        assert command(client, Command.RESUME).accepted
        wait_state(client, State.RUNNING)
        client.frame_sets.publish(frame_set(client, (Reason.AUTO_PAUSE_CLASS, "hand"), hand=True))
        wait_state(client, State.AWAITING_APPROVAL)
        # Published first, durable a moment later: kill once it is on disk.
        spin_until(client, lambda: "AWAITING_APPROVAL" in (tmp_path / "gate.json").read_text(), "the stop on disk")
        process.kill()
        process.wait()
    client.gate_states.clear()
    with node_process(MODULE, *operator_args(tmp_path)):
        restarted = wait_state(client, State.AWAITING_APPROVAL, "after the restart")
        assert restarted.active_faults == ["hand"]
        refused = command(client, Command.APPROVE)
        assert not refused.accepted and "no frame set decided since this stop" in refused.reason
        client.frame_sets.publish(frame_set(client))
        spin_until(client, lambda: command(client, Command.APPROVE).accepted, "APPROVE after a frame set without it")


def test_an_unreadable_state_file_starts_paused_and_says_why(client, tmp_path):
    (tmp_path / "gate.json").mkdir()
    log = tmp_path / "operator.log"
    with node_process(MODULE, *operator_args(tmp_path), log_path=log) as process:
        start = wait_state(client, State.PAUSED)
        assert "state file unreadable" in start.reason and process.poll() is None
        assert command(client, Command.RESUME).accepted, "a fresh state file replaced the bad one"
    assert "moved to gate.json.corrupt-" in log.read_text()
