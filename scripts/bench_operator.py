#!/usr/bin/env python3
"""Operator responsiveness: gate command -> answer, and command -> gate state received by another
node, with the operator_intent node in its own process over DDS (loopback). Prints a table of
p50 / p95 / max in milliseconds and one JSON line. No assertions: see tests/ros for behaviour."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import rclpy
from rclpy.node import Node

from segmentation_node.contract import OPERATOR_NODE, Command
from segmentation_node.ros.messages import endpoint_qos
from segmentation_node.ros.services import call
from workcell_segmentation.msg import GateState, OperatorCommand, OperatorIntent
from workcell_segmentation.srv import GateCommand, SetIntent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commands", type=int, default=200)
    args = parser.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    with tempfile.TemporaryDirectory() as state:
        node_process = subprocess.Popen(
            [sys.executable, "-m", "segmentation_node.ros.operator_node", "--ros-args",
             "-p", f"state_file:={state}/gate.json", "-p", f"transition_log:={state}/gate.jsonl"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rclpy.init()
        node = Node("bench_operator")
        received: list[tuple[int, float]] = []
        node.create_subscription(GateState, "gate_state", lambda m: received.append((m.transition_count, time.perf_counter())),
                                 endpoint_qos(OPERATOR_NODE, "gate_state"))
        gate_client = node.create_client(GateCommand, "gate_command")
        intent_client = node.create_client(SetIntent, "set_intent")
        try:
            call(node, gate_client, GateCommand.Request(command=OperatorCommand(
                command=int(Command.PAUSE), operator_id="bench")), 30.0)  # discovery done
            answer_ms, state_ms, intent_ms = [], [], []
            for index in range(args.commands):
                kind = Command.RESUME if index % 2 == 0 else Command.PAUSE
                start = time.perf_counter()
                response = call(node, gate_client, GateCommand.Request(
                    command=OperatorCommand(command=int(kind), operator_id="bench")), 5.0)
                answer_ms.append((time.perf_counter() - start) * 1000)
                count = response.state.transition_count
                while not any(c == count for c, _ in received):
                    rclpy.spin_once(node, timeout_sec=0.01)
                state_ms.append((next(t for c, t in received if c == count) - start) * 1000)
                start = time.perf_counter()
                call(node, intent_client, SetIntent.Request(intent=OperatorIntent(
                    operator_id="bench", text="defective items only")), 5.0)
                intent_ms.append((time.perf_counter() - start) * 1000)
        finally:
            node.destroy_node()
            rclpy.try_shutdown()
            node_process.terminate()
            node_process.wait(timeout=10)
    print(f"operator_intent over DDS (loopback), {args.commands} commands each; milliseconds")
    print("| measurement | p50 | p95 | max |")
    print("|---|---|---|---|")
    for name, values in (("gate command -> answer", answer_ms), ("gate command -> gate_state received", state_ms),
                         ("set_intent -> answer", intent_ms)):
        print(f"| {name} | {np.percentile(values, 50):.1f} | {np.percentile(values, 95):.1f} | {max(values):.1f} |")
    print("\n" + json.dumps({"benchmark": "bench_operator", "commands": args.commands, "rows": [
        {"measurement": name, "p50_ms": float(np.percentile(values, 50)), "p95_ms": float(np.percentile(values, 95)),
         "max_ms": float(max(values))}
        for name, values in (("gate command -> answer", answer_ms), ("gate command -> gate_state received", state_ms),
                             ("set_intent -> answer", intent_ms))]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
