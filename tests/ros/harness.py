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
RESEND_AFTER_S = 4.0


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


def call(node, service_type, name: str, request, timeout_s: float = TIMEOUT_S, while_waiting=None):
    """The service's response. The request is sent again when no answer came within
    RESEND_AFTER_S: with a client this new, Fast DDS can drop the reply while its path is still
    being matched ("failed to send response (timeout)" in the server's log). `while_waiting` is
    called between spins (to keep cameras streaming while the call is out)."""
    client = node.create_client(service_type, name)
    deadline = time.monotonic() + timeout_s
    future, sent_at = None, 0.0
    try:
        while not (future and future.done()):
            now = time.monotonic()
            assert now < deadline, f"no response from {name}" if future else f"service {name} not available"
            if client.service_is_ready() and (future is None or now - sent_at > RESEND_AFTER_S):
                if future is not None:
                    client.remove_pending_request(future)
                future, sent_at = client.call_async(request), now
            if while_waiting is not None:
                while_waiting()
            rclpy.spin_once(node, timeout_sec=0.05)
        return future.result()
    finally:
        node.destroy_client(client)
