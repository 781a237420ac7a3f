"""Real processes over real DDS for the node tests: start a node, wait until it answers, stop it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import rclpy

from tests.ros.interface_samples import REPO

TIMEOUT_S = 20.0


@contextmanager
def node_process(module: str, *ros_args: str, log_path=None, env: dict | None = None):
    """Run `python -m module --ros-args ...` as its own process (extra `env` variables); killed at the end."""
    command = [sys.executable, "-m", module]
    if ros_args:
        command += ["--ros-args", *ros_args]
    log = open(log_path, "w") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(command, cwd=REPO, env={**os.environ, **(env or {})}, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if log_path:
            log.close()


def spin_until(node, condition, what: str, timeout_s: float = TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        rclpy.spin_once(node, timeout_sec=0.05)


def call(node, service_type, name: str, request, timeout_s: float = TIMEOUT_S):
    client = node.create_client(service_type, name)
    try:
        assert client.wait_for_service(timeout_sec=timeout_s), f"service {name} not available"
        future = client.call_async(request)
        rclpy.spin_until_future_complete(node, future, timeout_sec=timeout_s)
        assert future.done(), f"no response from {name}"
        return future.result()
    finally:
        node.destroy_client(client)
