"""Every custom message and service crosses a real DDS link between two processes intact.

The peer (tests/ros/interface_peer.py) runs as a separate process; this test publishes a fully
populated sample of each message and compares the echo field by field, then calls each service
and checks the response the peer derived from the request.
"""
import os
import subprocess
import sys
import time

import pytest
import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from tests.ros.harness import call, spin_until
from tests.ros.interface_samples import REPO, interface_names, message_classes, sample, service_classes
from workcell_segmentation.msg import GateState, OperatorCommand
from workcell_segmentation.srv import GateCommand, SetIntent, SwapModel

ROUNDTRIP_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def peer():
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.ros.interface_peer"], cwd=REPO, env=os.environ.copy(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first_line = process.stdout.readline()
        assert first_line.strip() == "READY", f"peer did not start: {first_line}{process.stdout.read()}"
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def node():
    rclpy.init()
    try:
        test_node = Node("interface_roundtrip_test")
        yield test_node
        test_node.destroy_node()
    finally:
        rclpy.try_shutdown()


def test_generated_package_holds_every_interface_file():
    assert set(message_classes()) == set(interface_names("msg"))
    assert set(service_classes()) == set(interface_names("srv"))
    assert len(interface_names("msg")) >= 8 and len(interface_names("srv")) >= 2


@pytest.mark.parametrize("name", interface_names("msg"))
def test_message_round_trip(peer, node, name):
    message_class = message_classes()[name]
    sent = sample(message_class, seed=len(name))
    assert sent != message_class(), "sample must differ from the default message"
    received = []
    publisher = node.create_publisher(message_class, f"roundtrip/{name}", ROUNDTRIP_QOS)
    subscription = node.create_subscription(
        message_class, f"roundtrip/{name}/echo", received.append, ROUNDTRIP_QOS)
    try:
        spin_until(node, lambda: publisher.get_subscription_count() > 0
                   and subscription.get_publisher_count() > 0, f"{name} endpoints to match")
        # The peer's echo publisher may match us a moment after we see it: resend until heard.
        next_send = 0.0
        deadline = time.monotonic() + TIMEOUT_S
        while not received:
            assert time.monotonic() < deadline, f"no echo of {name}"
            if time.monotonic() >= next_send:
                publisher.publish(sent)
                next_send = time.monotonic() + 0.5
            rclpy.spin_once(node, timeout_sec=0.05)
        assert received[0] == sent
        assert received[0] is not sent
    finally:
        node.destroy_publisher(publisher)
        node.destroy_subscription(subscription)


def test_set_intent_service(peer, node):
    request = SetIntent.Request()
    request.intent = sample(type(request.intent), seed=3)
    request.intent.operator_id = "op-17"
    request.intent.text = "defective part_a only"
    response = call(node, SetIntent, "set_intent", request)
    assert response.accepted
    assert response.reason == "peer resolved 'defective part_a only' for op-17"
    assert response.suggestions == ["defective", "only", "part_a"]
    assert response.active.header == request.intent.header
    assert response.active.sequence == len("defective part_a only")
    assert response.active.operator_id == "op-17"
    assert response.active.pick_classes == ["defective", "part_a", "only"]
    assert response.active.prompts == ["DEFECTIVE", "PART_A", "ONLY"]
    assert response.active.ontology_version == "peer-ontology-1"

    empty = SetIntent.Request()
    empty.intent.text = "   "
    assert not call(node, SetIntent, "set_intent", empty).accepted


@pytest.mark.parametrize("command, expected_state", [
    (OperatorCommand.COMMAND_PAUSE, GateState.STATE_PAUSED),
    (OperatorCommand.COMMAND_APPROVE, GateState.STATE_RUNNING),
    (OperatorCommand.COMMAND_NONE, GateState.STATE_UNKNOWN),
])
def test_gate_command_service(peer, node, command, expected_state):
    request = GateCommand.Request()
    request.command = sample(OperatorCommand, seed=5)
    request.command.command = command
    request.command.operator_id = "op-3"
    request.command.reason = "bin refilled — ok"
    response = call(node, GateCommand, "gate_command", request)
    assert response.accepted == (command != OperatorCommand.COMMAND_NONE)
    assert response.reason == f"peer applied {command} from op-3: bin refilled — ok"
    assert response.state.state == expected_state
    assert response.state.header == request.command.header
    assert response.state.operator_id == "op-3"
    assert response.state.active_faults == ["bin refilled — ok"]


@pytest.mark.parametrize("version, rollback, accepted, active", [
    ("sam3-small-ft-0123abcd", False, True, "sam3-small-ft-0123abcd"),
    ("", True, True, "previous"),
    ("", False, False, ""),
])
def test_swap_model_service(peer, node, version, rollback, accepted, active):
    response = call(node, SwapModel, "swap_model", SwapModel.Request(version=version, rollback=rollback))
    assert response.accepted == accepted
    assert response.reason == f"peer: version={version!r} rollback={rollback}"
    assert (response.active_version, response.previous_version) == (active, "peer-model-1")
