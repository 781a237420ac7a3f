"""SIGINT shuts a node down cleanly (issue 13, point 6): exit code 0, no abort ("terminate called
without an active exception"), no traceback, also while the segmentation worker is inferring.

Each trial starts the node in its own process, waits for evidence that it is working (a frame set
result for frames this test sent; an answered service call), then sends SIGINT with work in flight.
"""
import os
import signal
import subprocess
import sys
import time

import pytest
import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from segmentation_node.contract import OPERATOR_NODE, SEGMENTATION_NODE
from segmentation_node.ros.messages import endpoint_qos, nanoseconds
from tests.ros.cell_stream import CAMERAS, make_cell, send
from tests.ros.harness import TIMEOUT_S, call
from tests.ros.interface_samples import REPO
from workcell_segmentation.msg import FrameSetResult, OperatorIntent
from workcell_segmentation.srv import SetIntent

SEGMENTATION_TRIALS = 10
OPERATOR_TRIALS = 3
EXIT_TIMEOUT_S = 30.0
BAD_OUTPUT = ("terminate called", "Traceback", "Fatal Python error", "Exception in thread", "exception not rethrown")


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cell")
    renders, _ = make_cell(folder)
    return folder, renders


@pytest.fixture(scope="module")
def client():
    rclpy.init()
    try:
        node = Node("shutdown_test_client")
        node.results = []
        node.create_subscription(FrameSetResult, "frame_set", node.results.append,
                                 endpoint_qos(SEGMENTATION_NODE, "frame_set"))
        # Reliable on our side: big best-effort images lose fragments on a busy loopback.
        camera_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        node.cameras = {c: node.create_publisher(Image, f"{c}/image_raw", camera_qos) for c in CAMERAS}
        yield node
        node.destroy_node()
    finally:
        rclpy.try_shutdown()


def start(module: str, log_path, *ros_args: str) -> subprocess.Popen:
    with open(log_path, "w") as log:
        return subprocess.Popen([sys.executable, "-m", module, "--ros-args", *ros_args], cwd=REPO,
                                env={**os.environ, "PYTHONFAULTHANDLER": "1"}, stdout=log, stderr=subprocess.STDOUT)


def interrupt(process: subprocess.Popen, log_path) -> tuple[object, str]:
    """SIGINT, wait for the exit: (exit code or 'hung', output)."""
    process.send_signal(signal.SIGINT)
    try:
        rc = process.wait(timeout=EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        rc = "hung"
    return rc, log_path.read_text(errors="replace")


def verdict(name: str, rc, output: str) -> str | None:
    bad = [marker for marker in BAD_OUTPUT if marker in output]
    if rc == 0 and not bad:
        return None
    return f"{name}: exit {rc}, {bad or 'no bad output'}:\n{output[-2500:]}"


def test_sigint_while_inferring_exits_cleanly(client, cell, tmp_path):
    folder, renders = cell
    args = ("-p", f"commissioning_file:={folder / 'cell.npz'}", "-p", "publish_overlay:=true")
    failures = []
    for trial in range(SEGMENTATION_TRIALS):
        log_path = tmp_path / f"segmentation-{trial}.log"
        process = start("segmentation_node.ros.segmentation", log_path, *args)
        try:
            client.results.clear()
            sent, index = set(), 0
            # Evidence: results of frame sets this test sent (not the watchdog's), 1 to 3 of them.
            wanted = 1 + trial % 3
            deadline = time.monotonic() + 4 * TIMEOUT_S
            while sum(nanoseconds(r.header.stamp) in sent for r in client.results) < wanted:
                assert process.poll() is None, f"trial {trial}: the node exited early:\n{log_path.read_text()}"
                assert time.monotonic() < deadline, f"trial {trial}: no frame set result:\n{log_path.read_text()}"
                send(client.cameras, renders, index % len(renders), sent=sent)
                index += 1
                end = time.monotonic() + 0.05
                while time.monotonic() < end:
                    rclpy.spin_once(client, timeout_sec=0.01)
            # Work in flight: one more frame set on its way to (or in) the worker.
            send(client.cameras, renders, index % len(renders), sent=sent)
        finally:
            rc, output = interrupt(process, log_path)
        failure = verdict(f"segmentation trial {trial}", rc, output)
        if failure:
            failures.append(failure)
    assert not failures, f"{len(failures)} of {SEGMENTATION_TRIALS} SIGINT exits were not clean:\n" + \
        "\n\n".join(failures)


def test_operator_sigint_exits_cleanly(client, tmp_path):
    results = client.create_publisher(FrameSetResult, "frame_set", endpoint_qos(OPERATOR_NODE, "frame_set"))
    failures = []
    try:
        for trial in range(OPERATOR_TRIALS):
            log_path = tmp_path / f"operator-{trial}.log"
            process = start("segmentation_node.ros.operator_node", log_path,
                            "-p", f"state_file:={tmp_path / f'gate-{trial}.json'}",
                            "-p", f"transition_log:={tmp_path / f'gate-{trial}.log'}")
            try:
                # Evidence: the node answers a service call, so it is spinning.
                answer = call(client, SetIntent, "set_intent",
                              SetIntent.Request(intent=OperatorIntent(operator_id="alice", text="pick everything")))
                assert answer.reason, f"trial {trial}: empty answer"
                for _ in range(3 + trial):  # callbacks in flight at the signal
                    results.publish(FrameSetResult())
            finally:
                rc, output = interrupt(process, log_path)
            failure = verdict(f"operator trial {trial}", rc, output)
            if failure:
                failures.append(failure)
    finally:
        client.destroy_publisher(results)
    assert not failures, f"{len(failures)} of {OPERATOR_TRIALS} SIGINT exits were not clean:\n" + \
        "\n\n".join(failures)
