"""operator: the safety gate and intent from a terminal.

    operator pause|resume|approve [--operator ID] [--reason TEXT]
    operator intent "defective items only" [--operator ID]
    operator status
    operator reject "missed the disc left of the clamp" [--frame N] [--track N]
    operator swap [VERSION]      (registry version; none: the promoted one)
    operator rollback

Calls the operator_intent node's services (answers within the timeout or says so) and, for
status, reads the latched gate state and active intent. reject sends a hard-case report (the
frames around it are saved for labelling); swap / rollback call the segmentation node's
swap_model service.
"""
from __future__ import annotations

import argparse
import getpass
import sys

import rclpy
from rclpy.node import Node
from std_msgs.msg import Header

from segmentation_node.contract import OPERATOR_NODE, SEGMENTATION_NODE, Command, HardCaseKind
from segmentation_node.contract import GateState as State
from segmentation_node.ros.messages import endpoint_qos
from segmentation_node.ros.services import call
from workcell_segmentation.msg import ActiveIntent, GateState, HardCaseReport, OperatorCommand, OperatorIntent
from workcell_segmentation.srv import GateCommand, SetIntent, SwapModel



def _status(node: Node, timeout_s: float) -> str:
    latest = {}
    node.create_subscription(GateState, "gate_state", lambda m: latest.__setitem__("gate", m),
                             endpoint_qos(OPERATOR_NODE, "gate_state"))
    node.create_subscription(ActiveIntent, "active_intent", lambda m: latest.__setitem__("intent", m),
                             endpoint_qos(OPERATOR_NODE, "active_intent"))
    end = node.get_clock().now().nanoseconds + int(timeout_s * 1e9)
    while "gate" not in latest and node.get_clock().now().nanoseconds < end:
        rclpy.spin_once(node, timeout_sec=0.1)
    if "gate" not in latest:
        raise TimeoutError(f"no gate state within {timeout_s:g} s: is the operator_intent node running?")
    rclpy.spin_once(node, timeout_sec=0.2)  # the intent may follow the gate state
    gate = latest["gate"]
    lines = [f"gate: {State(gate.state).name} (was {State(gate.previous_state).name}) by {gate.operator_id}: "
             f"{gate.reason}"]
    if gate.active_faults:
        lines.append(f"  holding: {', '.join(gate.active_faults)}")
    intent = latest.get("intent")
    lines.append(f"intent #{intent.sequence}: '{intent.text}' -> {intent.explanation}" if intent else "intent: none")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="operator", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["pause", "resume", "approve", "intent", "status", "reject", "swap",
                                           "rollback"])
    parser.add_argument("text", nargs="?", default="",
                        help="the intent (intent), what is wrong (reject) or a registry version (swap)")
    parser.add_argument("--frame", type=int, default=0, help="reject: FrameSetResult.sequence (default: latest)")
    parser.add_argument("--track", type=int, default=0, help="reject: the track id concerned (default: all)")
    parser.add_argument("--operator", default=getpass.getuser(), help="your operator id (default: login name)")
    parser.add_argument("--reason", default="", help="recorded with the gate transition")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for an answer")
    parser.add_argument("--namespace", default="/workcell", help="namespace of the nodes (launch: namespace)")
    args = parser.parse_args(argv)
    if args.action == "intent" and not args.text.strip():
        parser.error("intent needs the text, e.g. operator intent \"defective items only\"")

    rclpy.init()
    node = Node("operator_cli", namespace=args.namespace)
    try:
        if args.action == "status":
            print(_status(node, args.timeout))
            return 0
        if args.action == "reject":
            return _reject(node, args)
        if args.action in ("swap", "rollback"):
            response = call(node, node.create_client(SwapModel, "swap_model"),
                            SwapModel.Request(version=args.text, rollback=args.action == "rollback"),
                            max(args.timeout, 120.0))  # loading a model takes a while
            print(f"{'accepted' if response.accepted else 'REJECTED'}: {response.reason}")
            return 0 if response.accepted else 1
        if args.action == "intent":
            response = call(node, node.create_client(SetIntent, "set_intent"),
                            SetIntent.Request(intent=OperatorIntent(operator_id=args.operator, text=args.text)),
                            args.timeout)
            hint = f" Suggestions: {', '.join(response.suggestions)}." if response.suggestions else ""
            print(f"{'accepted' if response.accepted else 'REJECTED'}: {response.reason}{hint}")
            return 0 if response.accepted else 1
        command = OperatorCommand(command=int(Command[args.action.upper()]), operator_id=args.operator,
                                  reason=args.reason)
        response = call(node, node.create_client(GateCommand, "gate_command"), GateCommand.Request(command=command),
                        args.timeout)
        print(f"{'accepted' if response.accepted else 'REJECTED'}: {response.reason}; "
              f"gate {State(response.state.state).name}")
        return 0 if response.accepted else 1
    except TimeoutError as error:
        print(f"operator: {error}", file=sys.stderr)
        return 3
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def _reject(node: Node, args) -> int:
    """A topic, not a service: wait until the segmentation node listens, or the report is lost."""
    publisher = node.create_publisher(HardCaseReport, "hard_case_report",
                                      endpoint_qos(SEGMENTATION_NODE, "hard_case_report"))
    end = node.get_clock().now().nanoseconds + int(args.timeout * 1e9)
    while publisher.get_subscription_count() == 0:
        if node.get_clock().now().nanoseconds > end:
            raise TimeoutError(f"nobody subscribes to hard_case_report within {args.timeout:g} s: "
                               "is the segmentation node running?")
        rclpy.spin_once(node, timeout_sec=0.05)
    publisher.publish(HardCaseReport(kind=int(HardCaseKind.OPERATOR_REJECT), frame_set_sequence=args.frame,
                                     track_id=args.track, reporter_id=args.operator, detail=args.text,
                                     header=Header(stamp=node.get_clock().now().to_msg())))
    # Reliable, and a matched reader: linger so DDS can deliver (and resend) before the process exits.
    # (wait_for_all_acked reports False here even when the reader got the sample.)
    end = node.get_clock().now().nanoseconds + 500_000_000
    while node.get_clock().now().nanoseconds < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    print("reported: the frames around now are saved as a hard case (if the node logs data)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
