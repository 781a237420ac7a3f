"""A commissioned synthetic cell streaming into a real segmentation node, with an independent
consumer that records every result and gate state as it receives them: the rig of the safety
tests. The rig's node spins in its own thread (cameras paced by a timer), so the test thread
can call services and break things while results keep flowing."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from segmentation_node.contract import OPERATOR_NODE, SEGMENTATION_NODE, Command
from segmentation_node.contract import GateState as State
from segmentation_node.ros.messages import endpoint_qos, nanoseconds
from tests.ros.cell_stream import CAMERAS
from tests.ros.cell_stream import send as send_frame_set
from workcell_segmentation.msg import FrameSetResult, GateState, OperatorCommand
from workcell_segmentation.srv import GateCommand

TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Received:
    at_ns: int  # when the consumer received it (its clock)
    message: object


class SafetyRig(Node):
    def __init__(self, renders, frames, rate_hz: float = 8.0):
        super().__init__("safety_rig")
        self.renders, self.frames = renders, frames
        self.results: list[Received] = []
        self.gates: list[Received] = []
        self.diagnostics: list[DiagnosticArray] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.create_subscription(FrameSetResult, "frame_set", lambda m: self._record(self.results, m),
                                 endpoint_qos(SEGMENTATION_NODE, "frame_set"))
        self.create_subscription(GateState, "gate_state", lambda m: self._record(self.gates, m),
                                 endpoint_qos(OPERATOR_NODE, "gate_state"))
        self.create_subscription(DiagnosticArray, "/diagnostics", lambda m: self._record(self.diagnostics, m),
                                 endpoint_qos(SEGMENTATION_NODE, "/diagnostics"))
        # Reliable on our side: big best-effort images lose fragments on a busy loopback.
        camera_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.cameras = {c: self.create_publisher(Image, f"{c}/image_raw", camera_qos) for c in CAMERAS}
        self._sent = 0
        self.sent_at: list[int] = []  # wall clock of every frame set sent
        self.streaming = True
        self.create_timer(1.0 / rate_hz, self._send)
        self._client = self.create_client(GateCommand, "gate_command")
        self._executor = SingleThreadedExecutor()  # MultiThreadedExecutor busy-loops under load (segmentation.py)
        self._executor.add_node(self)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._executor.shutdown()
        self._thread.join(timeout=10)
        self.destroy_node()

    # --- what the consumer sees ---------------------------------------------------------------------
    def _record(self, log: list, message) -> None:
        with self._changed:
            log.append(message if log is self.diagnostics else Received(time.time_ns(), message))
            self._changed.notify_all()

    def wait(self, condition, what: str, timeout_s: float = TIMEOUT_S):
        """Block until `condition()` is truthy (re-checked whenever something is received)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not (value := condition()):
                left = deadline - time.monotonic()
                assert left > 0, f"timed out waiting for {what}"
                self._changed.wait(timeout=min(left, 0.2))
            return value

    def result_after(self, index: int, condition, what: str, timeout_s: float = TIMEOUT_S) -> Received:
        """The first result received after position `index` that satisfies `condition`."""
        return self.wait(lambda: next((r for r in self.results[index:] if condition(r.message)), None), what,
                         timeout_s)

    def gate_after(self, index: int, condition, what: str, timeout_s: float = TIMEOUT_S) -> Received:
        return self.wait(lambda: next((g for g in self.gates[index:] if condition(g.message)), None), what,
                         timeout_s)

    # --- cameras and operator -----------------------------------------------------------------------
    def _send(self) -> None:
        if self.streaming:
            self.sent_at.append(send_frame_set(self.cameras, self.renders, self.frames[self._sent % len(self.frames)]))
            self._sent += 1

    def command(self, kind: Command, operator: str = "alice", reason: str = ""):
        """PAUSE or RESUME (both idempotent), asked again when an answer is lost: right after a
        gate restarts, Fast DDS can drop a reply while the reply path is still being matched."""
        assert kind in (Command.PAUSE, Command.RESUME)
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            assert self._client.wait_for_service(timeout_sec=TIMEOUT_S), "no gate_command service"
            done = threading.Event()
            future = self._client.call_async(GateCommand.Request(
                command=OperatorCommand(command=int(kind), operator_id=operator, reason=reason)))
            future.add_done_callback(lambda _: done.set())
            if done.wait(3.0):
                return future.result()
            self._client.remove_pending_request(future)
            assert time.monotonic() < deadline, f"no answer to {kind.name}"

    def resume_until_actionable(self) -> Received:
        """RESUME once a result shows every camera OK (again if the gate was refused or stopped
        again before acting), then the first actionable result decided under that RUNNING epoch."""
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            assert time.monotonic() < deadline, "never became actionable"
            self.result_after(len(self.results), lambda r: r.views and all(v.camera_status == 0 for v in r.views),
                              "a result with every camera OK")
            answer = self.command(Command.RESUME)
            if not answer.accepted:
                assert "fault still active" in answer.reason or "in the workspace" in answer.reason, answer.reason
                continue
            epoch = answer.state.transition_count
            outcome = self.wait(lambda: next((r for r in self.results if r.message.actionable
                                              and r.message.gate_epoch == epoch), None)
                                or next((g for g in self.gates if g.message.transition_count > epoch), None),
                                f"an actionable result of gate epoch {epoch}")
            if isinstance(outcome.message, FrameSetResult):
                return outcome


def stamp_ns(received: Received) -> int:
    return nanoseconds(received.message.header.stamp)


def state_name(value: int) -> str:
    return State(value).name if value in State._value2member_map_ else str(value)
