"""GuardedResults: how a grasp planner subscribes to frame-set results.

It subscribes `gate_state` and `frame_set` (relative to the node's namespace, contract QoS),
runs every result through segmentation_node.planner_guard.PlannerGuard and hands the planner
the result with the guard's decision. The gate and the verdicts come from two publishers that
race on the wire: a result can arrive after the PAUSE it should have honoured, so
`result.actionable` alone is not enough; `decision.accepted` is. Works on Humble, Jazzy, Kilted.

    import rclpy
    from rclpy.node import Node
    from segmentation_node.ros.planner_guard import GuardedResults

    rclpy.init()
    node = Node("grasp_planner", namespace="workcell")

    def on_result(result, decision):
        if decision.accepted:
            pick(result)  # the ROLE_TARGET instances of result.views
        else:
            node.get_logger().info(f"wait: {decision.reason}")

    guarded = GuardedResults(node, on_result, max_age_s=1.0, gate_timeout_s=2.0)
    rclpy.spin(node)
"""
from __future__ import annotations

import math
from typing import Callable

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node

from segmentation_node.contract import OPERATOR_NODE, SEGMENTATION_NODE
from segmentation_node.planner_guard import GuardDecision, PlannerGuard
from segmentation_node.ros.messages import endpoint_qos, nanoseconds
from workcell_segmentation.msg import FrameSetResult, GateState


class GuardedResults:
    """Calls `callback(result, decision)` for every FrameSetResult; act only if decision.accepted.

    `on_gate(message)`, if given, gets every GateState (heartbeats included) right after the
    guard has taken it, e.g. to stop a motion in progress on PAUSE: one subscription, so what it
    reports and what the guard decides never disagree. Times are the node's clock
    (`node.get_clock()`: system time, or /clock with use_sim_time), the time base the cameras
    stamp images in. Keep the callbacks short: gate states wait for them.
    """

    def __init__(self, node: Node, callback: Callable[[FrameSetResult, GuardDecision], None], *,
                 max_age_s: float, gate_timeout_s: float, on_gate: Callable[[GateState], None] | None = None,
                 gate_topic: str = "gate_state", results_topic: str = "frame_set"):
        self.guard = PlannerGuard(max_age_s, gate_timeout_s)
        self._clock, self._callback, self._on_gate_callback = node.get_clock(), callback, on_gate
        # One mutually exclusive group: a multi-threaded executor never feeds the guard a gate
        # state and a result at the same time.
        group = MutuallyExclusiveCallbackGroup()
        self.gate_subscription = node.create_subscription(
            GateState, gate_topic, self._on_gate, endpoint_qos(OPERATOR_NODE, "gate_state"), callback_group=group)
        self.results_subscription = node.create_subscription(
            FrameSetResult, results_topic, self._on_result, endpoint_qos(SEGMENTATION_NODE, "frame_set"),
            callback_group=group)

    def _on_gate(self, message: GateState) -> None:
        # A malformed heartbeat period must not drop the state it came with (it may be a PAUSE):
        # read it as "no heartbeat promised".
        period = message.heartbeat_period_s
        self.guard.on_gate(message.state, message.transition_count,
                           period if math.isfinite(period) and period >= 0 else 0.0, self._clock.now().nanoseconds)
        if self._on_gate_callback is not None:
            self._on_gate_callback(message)

    def _on_result(self, result: FrameSetResult) -> None:
        decision = self.guard.check(result.actionable, result.gate_state, result.gate_epoch,
                                    nanoseconds(result.header.stamp), self._clock.now().nanoseconds, result.reasons)
        self._callback(result, decision)
