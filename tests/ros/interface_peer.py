"""Peer process of tests/ros/test_interfaces_dds.py.

Echoes every custom message from `roundtrip/<Name>` to `roundtrip/<Name>/echo` and serves every
custom service on `<name>` with a response derived from the request, so the test, in another
process, can check field contents after real serialization over DDS both ways.
"""
import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from tests.ros.interface_samples import message_classes
from workcell_segmentation.msg import GateState, OperatorCommand
from workcell_segmentation.srv import GateCommand, SetIntent, SwapModel

ROUNDTRIP_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
STATE_AFTER = {
    OperatorCommand.COMMAND_PAUSE: GateState.STATE_PAUSED,
    OperatorCommand.COMMAND_RESUME: GateState.STATE_RUNNING,
    OperatorCommand.COMMAND_APPROVE: GateState.STATE_RUNNING,
}


def set_intent_response(request, response):
    intent = request.intent
    words = intent.text.split()
    response.accepted = bool(words)
    response.reason = f"peer resolved '{intent.text}' for {intent.operator_id}"
    response.suggestions = sorted(words)
    response.active.header = intent.header
    response.active.sequence = len(intent.text)
    response.active.operator_id = intent.operator_id
    response.active.text = intent.text
    response.active.ontology_version = "peer-ontology-1"
    response.active.pick_classes = words
    response.active.prompts = [word.upper() for word in words]
    response.active.explanation = f"{len(words)} word(s)"
    return response


def gate_command_response(request, response):
    command = request.command
    response.accepted = command.command in STATE_AFTER
    response.reason = f"peer applied {command.command} from {command.operator_id}: {command.reason}"
    response.state.header = command.header
    response.state.state = STATE_AFTER.get(command.command, GateState.STATE_UNKNOWN)
    response.state.previous_state = GateState.STATE_PAUSED
    response.state.transition_count = 1
    response.state.operator_id = command.operator_id
    response.state.reason = command.reason
    response.state.active_faults = [command.reason]
    return response


def swap_model_response(request, response):
    response.accepted = bool(request.version) or request.rollback
    response.reason = f"peer: version={request.version!r} rollback={request.rollback}"
    response.active_version = "previous" if request.rollback else request.version
    response.previous_version = "peer-model-1"
    return response


class InterfacePeer(Node):
    def __init__(self):
        super().__init__("interface_peer")
        self._keep = []
        for name, message_class in message_classes().items():
            echo = self.create_publisher(message_class, f"roundtrip/{name}/echo", ROUNDTRIP_QOS)
            self._keep.append(self.create_subscription(
                message_class, f"roundtrip/{name}", echo.publish, ROUNDTRIP_QOS))
        self.create_service(SetIntent, "set_intent", set_intent_response)
        self.create_service(GateCommand, "gate_command", gate_command_response)
        self.create_service(SwapModel, "swap_model", swap_model_response)


def main():
    rclpy.init()
    try:
        node = InterfacePeer()
        print("READY", flush=True)
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
