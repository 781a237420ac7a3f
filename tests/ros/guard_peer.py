"""Peer process of tests/ros/test_planner_guard_dds.py: a scripted gate and segmentation node.

Publishes on `gate_state` and `frame_set` with the contract's QoS what the test writes on stdin,
one command a line:

    gate STATE COUNT HEARTBEAT_S   publish a GateState, then republish it every HEARTBEAT_S (0: never)
    silence                        stop the heartbeats (the gate falls silent)
    result SEQUENCE ACTIONABLE GATE_STATE GATE_EPOCH AGE_S
                                   publish a FrameSetResult stamped AGE_S before now

Prints READY once both publishers have matched a subscriber (so nothing sent later is lost).
"""
import queue
import sys
import threading

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from std_msgs.msg import Header

from segmentation_node.contract import OPERATOR_NODE, SEGMENTATION_NODE
from segmentation_node.ros.messages import endpoint_qos, stamp_of
from workcell_segmentation.msg import FrameSetResult, GateState


class GuardPeer(Node):
    def __init__(self):
        super().__init__("guard_peer")
        self.gate_pub = self.create_publisher(GateState, "gate_state", endpoint_qos(OPERATOR_NODE, "gate_state"))
        self.result_pub = self.create_publisher(FrameSetResult, "frame_set",
                                                endpoint_qos(SEGMENTATION_NODE, "frame_set"))
        self.gate = GateState()
        self.heartbeat = None
        self.commands: queue.Queue[str] = queue.Queue()
        # The stdin reader wakes the executor through a guard condition: commands run on its thread.
        self.wake = self.create_guard_condition(self._run_commands)
        self.ready_poll = self.create_timer(0.02, self._announce_when_matched)

    def _announce_when_matched(self) -> None:
        if self.gate_pub.get_subscription_count() and self.result_pub.get_subscription_count():
            self.ready_poll.cancel()
            print("READY", flush=True)

    def _run_commands(self) -> None:
        while not self.commands.empty():
            word, *args = self.commands.get().split()
            getattr(self, f"_{word}")(*args)

    def _gate(self, state: str, count: str, heartbeat_s: str) -> None:
        self._silence()
        self.gate = GateState(header=Header(stamp=self.get_clock().now().to_msg()), state=int(state),
                              transition_count=int(count), heartbeat_period_s=float(heartbeat_s))
        self.gate_pub.publish(self.gate)
        if self.gate.heartbeat_period_s > 0:
            self.heartbeat = self.create_timer(self.gate.heartbeat_period_s, lambda: self.gate_pub.publish(self.gate))

    def _silence(self) -> None:
        if self.heartbeat is not None:
            self.destroy_timer(self.heartbeat)
            self.heartbeat = None

    def _result(self, sequence: str, actionable: str, gate_state: str, epoch: str, age_s: str) -> None:
        stamp = self.get_clock().now().nanoseconds - int(float(age_s) * 1e9)
        self.result_pub.publish(FrameSetResult(
            header=Header(stamp=stamp_of(stamp)), sequence=int(sequence), actionable=actionable == "1",
            gate_state=int(gate_state), gate_epoch=int(epoch),
            reasons=[] if actionable == "1" else ["peer: not actionable"]))


def main():
    rclpy.init()
    try:
        node = GuardPeer()

        def read_stdin():
            for line in sys.stdin:
                node.commands.put(line)
                node.wake.trigger()

        threading.Thread(target=read_stdin, daemon=True).start()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
