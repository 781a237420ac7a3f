"""operator_intent node: operator intent and the safety gate.

Takes intent text and gate commands from topics (rqt_publisher) and services
(rqt_service_caller, the operator CLI), resolves intent against the versioned ontology, enforces
the gate rules (segmentation_node.gate), and publishes the active intent and the gate state
latched. Every request is answered at once with accepted / rejected and a reason.
"""
from __future__ import annotations

import sys
from pathlib import Path

from rcl_interfaces.msg import ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.node import Node

from segmentation_node.contract import OPERATOR_NODE, Reason
from segmentation_node.gate import SafetyGate
from segmentation_node.perception.intent import IntentError, ResolvedIntent, resolve_intent
from segmentation_node.perception.ontology import load_ontology
from segmentation_node.ros.messages import active_intent_message, endpoint_qos, gate_message
from segmentation_node.ros.runner import run_node
from workcell_segmentation.msg import ActiveIntent, FrameSetResult, GateState, OperatorCommand, OperatorIntent
from workcell_segmentation.srv import GateCommand, SetIntent

DEFAULT_STATE_DIR = Path("~/.ros/workcell_segmentation").expanduser()


class OperatorIntentNode(Node):
    def __init__(self, **kwargs):
        super().__init__(OPERATOR_NODE, **kwargs)
        text = ParameterType.PARAMETER_STRING
        self.declare_parameter("ontology_file", "", ParameterDescriptor(
            type=text, read_only=True, description="ontology YAML; empty: the package's config/ontology.yaml"))
        self.declare_parameter("state_file", str(DEFAULT_STATE_DIR / "gate.json"), ParameterDescriptor(
            type=text, read_only=True, description="where the gate state survives restarts"))
        self.declare_parameter("transition_log", str(DEFAULT_STATE_DIR / "gate_transitions.jsonl"),
                               ParameterDescriptor(type=text, read_only=True,
                                                   description="append-only log of every gate transition"))
        self.declare_parameter("allowed_operators", [""], ParameterDescriptor(
            type=ParameterType.PARAMETER_STRING_ARRAY,
            description="operator ids allowed to RESUME / APPROVE; [''] or []: anyone"))
        self.declare_parameter("initial_intent", "", ParameterDescriptor(
            type=text, read_only=True, description="intent in force at start-up; empty: none"))

        ontology_file = self.get_parameter("ontology_file").value
        self.ontology = load_ontology(ontology_file or None)  # OntologyError: refuse to start
        self.gate = SafetyGate(Path(self.get_parameter("state_file").value).expanduser(),
                               Path(self.get_parameter("transition_log").value).expanduser(),
                               self._operators(self.get_parameter("allowed_operators").value))
        self.add_on_set_parameters_callback(self._on_parameters)

        self._gate_pub = self.create_publisher(GateState, "gate_state", endpoint_qos(OPERATOR_NODE, "gate_state"))
        self._intent_pub = self.create_publisher(ActiveIntent, "active_intent",
                                                 endpoint_qos(OPERATOR_NODE, "active_intent"))
        self.create_subscription(OperatorIntent, "intent", self._on_intent_topic, endpoint_qos(OPERATOR_NODE, "intent"))
        self.create_subscription(OperatorCommand, "command", self._on_command_topic,
                                 endpoint_qos(OPERATOR_NODE, "command"))
        self.create_subscription(FrameSetResult, "frame_set", self._on_frame_set,
                                 endpoint_qos(OPERATOR_NODE, "frame_set"))
        self.create_service(SetIntent, "set_intent", self._on_set_intent)
        self.create_service(GateCommand, "gate_command", self._on_gate_command)

        self._intent_sequence = 0
        self._active = ActiveIntent(ontology_version=self.ontology.version)
        initial = self.get_parameter("initial_intent").value
        if initial:
            accepted, reason, _ = self._set_intent("startup", initial)
            if not accepted:
                raise ValueError(f"initial_intent '{initial}' rejected: {reason}")
        self._publish_gate()
        self.get_logger().info(f"gate {self.gate.status.state.name} ({self.gate.status.reason}); "
                               f"ontology {self.ontology.version}")

    # --- parameters ---------------------------------------------------------------------------------
    @staticmethod
    def _operators(values) -> frozenset[str]:
        return frozenset(v.strip() for v in values if v.strip())

    def _on_parameters(self, parameters) -> SetParametersResult:
        for parameter in parameters:
            if parameter.name == "allowed_operators":
                if any(len(v.strip()) > 64 for v in parameter.value):
                    return SetParametersResult(successful=False, reason="operator ids are at most 64 characters")
                self.gate.allowed_operators = self._operators(parameter.value)
        return SetParametersResult(successful=True)

    # --- intent -------------------------------------------------------------------------------------
    def _set_intent(self, operator_id: str, text: str) -> tuple[bool, str, tuple[str, ...]]:
        operator_id = operator_id.strip() or "unknown"
        try:
            intent: ResolvedIntent = resolve_intent(text, self.ontology)
        except IntentError as error:
            self.get_logger().warning(f"intent from {operator_id} rejected: {error}")
            return False, str(error), error.suggestions
        self._intent_sequence += 1
        self._active = active_intent_message(intent, self._intent_sequence, operator_id,
                                             self.get_clock().now().nanoseconds)
        self._intent_pub.publish(self._active)
        self.get_logger().info(f"intent #{self._intent_sequence} from {operator_id}: '{text}' -> {intent.explanation}")
        return True, intent.explanation, ()

    def _on_set_intent(self, request, response):
        response.accepted, response.reason, suggestions = self._set_intent(request.intent.operator_id,
                                                                            request.intent.text)
        response.suggestions = list(suggestions)
        response.active = self._active
        return response

    def _on_intent_topic(self, message: OperatorIntent) -> None:
        self._set_intent(message.operator_id, message.text)

    # --- gate ---------------------------------------------------------------------------------------
    def _command(self, command: OperatorCommand):
        before = self.gate.status
        answer = self.gate.command(command.command, command.operator_id, command.reason)
        text = (f"gate command {command.command} from '{command.operator_id}': "
                f"{'accepted' if answer.accepted else 'rejected'} ({answer.reason}); gate {answer.status.state.name}")
        # rclpy ties a severity to each logging call site: two sites, not one with a variable level.
        if answer.accepted:
            self.get_logger().info(text)
        else:
            self.get_logger().warning(text)
        if answer.status is not before:
            self._publish_gate()
        return answer

    def _on_gate_command(self, request, response):
        answer = self._command(request.command)
        response.accepted, response.reason, response.state = answer.accepted, answer.reason, gate_message(answer.status)
        return response

    def _on_command_topic(self, message: OperatorCommand) -> None:
        self._command(message)

    def _on_frame_set(self, result: FrameSetResult) -> None:
        """Automatic stops: an auto-pause class in view, a stale camera, a failing model."""
        codes = set(result.reason_codes)
        auto_pause = sorted({i.label for view in result.views for i in view.instances
                             if i.label in self.ontology.classes and self.ontology.classes[i.label].auto_pause}) \
            if Reason.AUTO_PAUSE_CLASS in codes else []
        faults = {}
        for code, text in zip(result.reason_codes, result.reasons):
            if code in (Reason.CAMERA_NOT_FRESH, Reason.MODEL_ERROR):
                faults[Reason(code).name.lower()] = text
        before = self.gate.status
        after = self.gate.observe(tuple(auto_pause), faults)
        if after is not before:
            if after.state is not before.state:
                self.get_logger().warning(f"gate {before.state.name} -> {after.state.name}: {after.reason}")
            self._publish_gate()

    def _publish_gate(self) -> None:
        self._gate_pub.publish(gate_message(self.gate.status))


def main(args=None) -> int:
    return run_node("operator_intent", __doc__, OperatorIntentNode, args)


if __name__ == "__main__":
    sys.exit(main())
