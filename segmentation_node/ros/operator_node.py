"""operator_intent node: operator intent and the safety gate.

Takes intent text and gate commands from topics (rqt_publisher) and services
(rqt_service_caller, the operator CLI), resolves intent against the versioned ontology, enforces
the gate rules (segmentation_node.gate), and publishes the active intent and the gate state
latched. Every request is answered at once with accepted / rejected and a reason.

The gate state is published on every transition and, unchanged, every heartbeat_period_s: a
segmentation node or planner that stops hearing it treats the gate as lost. A PAUSE is published
before it is written to disk; a disk that fails is reported (gate FAULT "persistence",
/diagnostics ERROR), never raised. Who may RESUME / APPROVE is read-only configuration
(allowed_operators; empty: nobody) and is recorded in the transition log at every start.
"""
from __future__ import annotations

import sys
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from std_msgs.msg import Header

from segmentation_node import contract
from segmentation_node.contract import OPERATOR_NODE, CameraStatus, Command, Reason
from segmentation_node.gate import SYSTEM_OPERATOR, Answer, SafetyGate, printable
from segmentation_node.gate_journal import GateJournal
from segmentation_node.parameters import OPERATOR_PARAMETERS
from segmentation_node.perception.actionability import auto_pause_labels
from segmentation_node.perception.intent import IntentError, ResolvedIntent, resolve_intent
from segmentation_node.perception.ontology import load_ontology
from segmentation_node.ros.contained import contained
from segmentation_node.ros.messages import active_intent_message, endpoint_qos, gate_message
from segmentation_node.ros.parameters import declare
from segmentation_node.ros.runner import run_node
from workcell_segmentation.msg import ActiveIntent, FrameSetResult, GateState, OperatorCommand, OperatorIntent
from workcell_segmentation.srv import GateCommand, SetIntent


class OperatorIntentNode(Node):
    def __init__(self, **kwargs):
        super().__init__(OPERATOR_NODE, **kwargs)
        declare(self, OPERATOR_PARAMETERS)

        ontology_file = self.get_parameter("ontology_file").value
        self.ontology = load_ontology(ontology_file or None)  # OntologyError: refuse to start
        allowed = [o for o in self.get_parameter("allowed_operators").value if o.strip()]
        self.gate = SafetyGate(GateJournal(Path(self.get_parameter("state_file").value).expanduser(),
                                           Path(self.get_parameter("transition_log").value).expanduser()),
                               allowed)  # ValueError (a bad operator id): refuse to start, say why
        self.heartbeat_period_s = self.get_parameter("heartbeat_period_s").value

        self._gate_pub = self.create_publisher(GateState, "gate_state", endpoint_qos(OPERATOR_NODE, "gate_state"))
        self._intent_pub = self.create_publisher(ActiveIntent, "active_intent",
                                                 endpoint_qos(OPERATOR_NODE, "active_intent"))
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics",
                                                      endpoint_qos(OPERATOR_NODE, "/diagnostics"))
        self.create_subscription(OperatorIntent, "intent", contained(self, "intent message")(self._on_intent_topic),
                                 endpoint_qos(OPERATOR_NODE, "intent"))
        self.create_subscription(OperatorCommand, "command",
                                 contained(self, "gate command message", self._pause_on_error)(self._on_command_topic),
                                 endpoint_qos(OPERATOR_NODE, "command"))
        self.create_subscription(FrameSetResult, "frame_set",
                                 contained(self, "frame set observation", self._pause_on_error)(self._on_frame_set),
                                 endpoint_qos(OPERATOR_NODE, "frame_set"))
        self.create_service(SetIntent, "set_intent",
                            contained(self, "set_intent", self._refuse_intent)(self._on_set_intent))
        self.create_service(GateCommand, "gate_command",
                            contained(self, "gate_command", self._answer_after_error)(self._on_gate_command))
        self.create_timer(self.heartbeat_period_s, contained(self, "gate heartbeat")(self._heartbeat))
        self.create_timer(1.0, contained(self, "diagnostics")(self._publish_diagnostics))

        self._intent_sequence = 0
        self._active = ActiveIntent(ontology_version=self.ontology.version)
        initial = self.get_parameter("initial_intent").value
        if initial:
            accepted, reason, _ = self._set_intent("startup", initial)
            if not accepted:
                raise ValueError(f"initial_intent '{initial}' rejected: {reason}")
        self._publish_gate()
        status = self.gate.status
        self.get_logger().info(f"gate {status.state.name} (epoch {status.transition_count}: {status.reason}); "
                               f"ontology {self.ontology.version}; may resume / approve: "
                               f"{', '.join(sorted(self.gate.allowed_operators)) or 'nobody'}")
        if self.gate.start_problem:
            self.get_logger().error(f"gate state on disk: {self.gate.start_problem}")
        if not self.gate.allowed_operators:
            self.get_logger().warning("allowed_operators is empty: nobody can RESUME or APPROVE until it is set "
                                      "in the configuration and the node restarted")
        if self.gate.persistence_error:
            self.get_logger().error(f"gate FAULT: {self.gate.persistence_error}")

    # --- intent -------------------------------------------------------------------------------------
    def _set_intent(self, operator_id: str, text: str) -> tuple[bool, str, tuple[str, ...]]:
        operator_id = printable(operator_id, 64) or "unknown"
        try:
            intent: ResolvedIntent = resolve_intent(text, self.ontology)
        except IntentError as error:
            self.get_logger().warning(f"intent from {operator_id} rejected: {printable(error, 300)}")
            return False, str(error), error.suggestions
        self._intent_sequence += 1
        self._active = active_intent_message(intent, self._intent_sequence, operator_id,
                                             self.get_clock().now().nanoseconds)
        self._intent_pub.publish(self._active)
        self.get_logger().info(f"intent #{self._intent_sequence} from {operator_id}: '{printable(text, 200)}' -> "
                               f"{intent.explanation}")
        return True, intent.explanation, ()

    def _on_set_intent(self, request, response):
        response.accepted, response.reason, suggestions = self._set_intent(request.intent.operator_id,
                                                                            request.intent.text)
        response.suggestions = list(suggestions)
        response.active = self._active
        return response

    def _on_intent_topic(self, message: OperatorIntent) -> None:
        self._set_intent(message.operator_id, message.text)

    @staticmethod
    def _refuse_intent(error, request, response):
        response.accepted, response.reason = False, f"internal error: {type(error).__name__}"
        return response

    # --- gate ---------------------------------------------------------------------------------------
    def _command(self, command: OperatorCommand) -> Answer:
        before = self.gate.status
        answer = self.gate.command(command.command, command.operator_id, command.reason)
        if answer.status is not before:
            self._publish_gate()  # before the disk: a PAUSE never waits for a write
        text = (f"gate command {printable(command.command, 8)} from '{printable(command.operator_id, 64)}': "
                f"{'accepted' if answer.accepted else 'rejected'} ({answer.reason}); gate {answer.status.state.name}")
        # rclpy ties a severity to each logging call site: two sites, not one with a variable level.
        if answer.accepted:
            self.get_logger().info(text)
        else:
            self.get_logger().warning(text)
        self._flush()
        return answer

    def _on_gate_command(self, request, response):
        answer = self._command(request.command)
        response.accepted, response.reason, response.state = answer.accepted, answer.reason, gate_message(
            self.gate.status, self.heartbeat_period_s)
        return response

    def _on_command_topic(self, message: OperatorCommand) -> None:
        self._command(message)

    def _pause_on_error(self, error, *args) -> None:
        """Whatever went wrong in a gate callback, the cell stops."""
        answer = self.gate.command(Command.PAUSE, SYSTEM_OPERATOR, f"internal error: {type(error).__name__}: {error}")
        self._publish_gate()
        self._flush()
        return answer

    def _answer_after_error(self, error, request, response):
        answer = self._pause_on_error(error)
        paused = getattr(request.command, "command", None) == Command.PAUSE
        response.accepted = paused
        response.reason = f"internal error ({type(error).__name__}); the gate is {answer.status.state.name}"
        response.state = gate_message(self.gate.status, self.heartbeat_period_s)
        return response

    def _on_frame_set(self, result: FrameSetResult) -> None:
        """Automatic stops: an auto-pause class in view, a camera that is not OK, a failing model."""
        codes = set(result.reason_codes)
        auto_pause = auto_pause_labels(((i.label, i.score) for view in result.views for i in view.instances),
                                       self.ontology) if Reason.AUTO_PAUSE_CLASS in codes else []
        faults = {}
        for view in result.views:
            if view.camera_status != CameraStatus.OK:
                status = CameraStatus(view.camera_status).name if view.camera_status in CameraStatus._value2member_map_ \
                    else f"status {view.camera_status}"
                faults[f"camera {printable(view.camera_name, 64)}"] = f"{status} {printable(view.camera_detail, 200)}"
        for code, text in zip(result.reason_codes, result.reasons):
            if code == Reason.MODEL_ERROR:
                faults["model"] = printable(text, 200)
        before = self.gate.status
        after = self.gate.observe(auto_pause, faults, result.gate_epoch)
        if after is not before:
            if after.state is not before.state:
                self.get_logger().warning(f"gate {before.state.name} -> {after.state.name}: {after.reason}")
            self._publish_gate()
            self._flush()

    def _flush(self) -> None:
        """Persist after publishing; a failing disk stops the gate and is said once per change."""
        before = self.gate.status
        if self.gate.flush():
            self._publish_gate()
            if self.gate.persistence_error:
                self.get_logger().error(f"gate {self.gate.status.state.name}: {self.gate.persistence_error}")
            else:
                self.get_logger().info("gate state persisted again; the persistence fault has cleared")
        elif before.active_faults != self.gate.status.active_faults:
            self._publish_gate()

    def _heartbeat(self) -> None:
        self._flush()  # retries a failed write
        self._publish_gate()

    def _publish_gate(self) -> None:
        self._gate_pub.publish(gate_message(self.gate.status, self.heartbeat_period_s))

    def _publish_diagnostics(self) -> None:
        status = self.gate.status
        level = DiagnosticStatus.ERROR if self.gate.persistence_error or status.state is contract.GateState.FAULT \
            else DiagnosticStatus.OK
        self._diagnostics_pub.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=[
            DiagnosticStatus(level=level, name=f"{OPERATOR_NODE}: gate",
                             message=self.gate.persistence_error or f"{status.state.name}: {status.reason}",
                             values=[KeyValue(key="state", value=status.state.name),
                                     KeyValue(key="epoch", value=str(status.transition_count)),
                                     KeyValue(key="active_faults", value=", ".join(status.active_faults)),
                                     KeyValue(key="intent_sequence", value=str(self._intent_sequence))])]))


def main(args=None) -> int:
    return run_node("operator_intent", __doc__, OperatorIntentNode, args, OPERATOR_PARAMETERS)


if __name__ == "__main__":
    sys.exit(main())
