"""operator_intent node in its own process, driven over DDS like rqt and a grasp planner would."""
import subprocess
import sys

import pytest
import rclpy
from rclpy.node import Node

from segmentation_node.contract import OPERATOR_NODE, Command, Reason, Role
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


def frame_set(*reasons, hand=False):
    view = ViewResult(camera_name="cam_top")
    if hand:
        view.instances = [InstanceMask(track_id=5, label="hand", role=int(Role.FORBIDDEN), score=0.9)]
    return FrameSetResult(views=[view], reason_codes=[int(code) for code, _ in reasons],
                          reasons=[text for _, text in reasons])


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
        client.frame_sets.publish(frame_set((Reason.AUTO_PAUSE_CLASS, "hand in the workspace"), hand=True))
        assert wait_state(client, State.AWAITING_APPROVAL, "after a hand").operator_id == "system"
        assert "needs APPROVE" in command(client, Command.RESUME).reason
        assert "still in the workspace" in command(client, Command.APPROVE).reason
        client.frame_sets.publish(frame_set())
        approved = command(client, Command.APPROVE, operator="bob", reason="cell clear")
        assert approved.accepted and approved.state.state == State.RUNNING

        # A stale camera faults the gate until it clears and someone resumes.
        client.frame_sets.publish(frame_set((Reason.CAMERA_NOT_FRESH, "cam_left: no image for 1.2 s")))
        fault = wait_state(client, State.FAULT, "after a stale camera")
        assert "cam_left" in fault.reason
        assert "fault still active" in command(client, Command.RESUME).reason
        client.frame_sets.publish(frame_set())
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
