"""A fixed RUNNING gate for tools that run the segmentation node without an operator (the live
regression replay, the model swap check): published the way operator_intent publishes it,
latched and with heartbeats. The segmentation node trusts it only when started with
`gate_node:=<the tool's node>`: standing in for the gate is configured, never assumed."""
from __future__ import annotations

from std_msgs.msg import Header

from segmentation_node.contract import OPERATOR_NODE
from segmentation_node.contract import GateState as State
from segmentation_node.ros.messages import endpoint_qos
from workcell_segmentation.msg import GateState

HEARTBEAT_PERIOD_S = 0.5


def publish_stand_in_gate(node, operator_id: str, reason: str) -> tuple:
    """Publish RUNNING from `node` now and every heartbeat; keep the returned handles alive."""
    publisher = node.create_publisher(GateState, "gate_state", endpoint_qos(OPERATOR_NODE, "gate_state"))
    message = GateState(header=Header(stamp=node.get_clock().now().to_msg()), state=int(State.RUNNING),
                        previous_state=int(State.PAUSED), transition_count=1, operator_id=operator_id, reason=reason,
                        heartbeat_period_s=HEARTBEAT_PERIOD_S)
    publisher.publish(message)
    return publisher, node.create_timer(HEARTBEAT_PERIOD_S, lambda: publisher.publish(message))
