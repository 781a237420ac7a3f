"""GuardedResults over real DDS: a scripted gate and segmentation node in another process
(tests/ros/guard_peer.py) publish gate states with heartbeats and results; the planner side here
acts only on what the guard accepts. Every step waits for the message it depends on to arrive."""
import os
import select
import subprocess
import sys
import time

import pytest
import rclpy
from rclpy.node import Node

from segmentation_node.contract import GateState
from segmentation_node.ros.planner_guard import GuardedResults
from tests.ros.harness import TIMEOUT_S, spin_until
from tests.ros.interface_samples import REPO

RUNNING, PAUSED = int(GateState.RUNNING), int(GateState.PAUSED)
HEARTBEAT_S, GATE_TIMEOUT_S, MAX_AGE_S = 0.1, 1.5, 2.0


@pytest.fixture(scope="module")
def ros():
    rclpy.init()
    yield
    rclpy.try_shutdown()


class Planner:
    """The test's end of the wire: a node with GuardedResults, and the peer it scripts."""

    def __init__(self, node: Node, peer: subprocess.Popen):
        self.node, self.peer, self.decisions, self.gates = node, peer, {}, []
        self.guarded = GuardedResults(node, self._on_result, max_age_s=MAX_AGE_S, gate_timeout_s=GATE_TIMEOUT_S,
                                      on_gate=self.gates.append)
        self._sequence = 0

    def _on_result(self, result, decision) -> None:
        self.decisions[result.sequence] = decision

    def send(self, line: str) -> None:
        self.peer.stdin.write(line + "\n")
        self.peer.stdin.flush()

    def gate(self, state: int, count: int, heartbeat_s: float = HEARTBEAT_S) -> None:
        """Publish a gate state and wait until the guard has taken it (on_gate runs right after)."""
        heard = len(self.gates)
        self.send(f"gate {state} {count} {heartbeat_s}")
        spin_until(self.node, lambda: len(self.gates) > heard
                   and (self.gates[-1].state, self.gates[-1].transition_count) == (state, count),
                   f"gate {state} #{count} at the guard")
        assert (self.guarded.guard.gate.state, self.guarded.guard.gate.transition_count) == (state, count)

    def result(self, epoch: int, actionable: bool = True, gate_state: int = RUNNING, age_s: float = 0.0):
        """Publish a result and wait for the guard's decision on it."""
        self._sequence += 1
        sequence = self._sequence
        self.send(f"result {sequence} {int(actionable)} {gate_state} {epoch} {age_s}")
        spin_until(self.node, lambda: sequence in self.decisions, f"result {sequence} at the planner")
        return self.decisions[sequence]


@pytest.fixture
def planner(ros):
    node = Node("guarded_planner")
    peer = subprocess.Popen([sys.executable, "-m", "tests.ros.guard_peer"], cwd=REPO, env=os.environ.copy(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        planner = Planner(node, peer)
        # READY: the peer's publishers matched ours, so a volatile result sent from now on arrives.
        deadline = time.monotonic() + TIMEOUT_S
        while not select.select([peer.stdout], [], [], 0.05)[0]:
            assert time.monotonic() < deadline and peer.poll() is None, "guard peer did not start"
            rclpy.spin_once(node, timeout_sec=0)
        line = peer.stdout.readline()
        assert line.strip() == "READY", f"guard peer: {line}{peer.stdout.read() if peer.poll() is not None else ''}"
        yield planner
    finally:
        peer.terminate()
        peer.wait(timeout=10)
        node.destroy_node()


def test_results_of_the_running_epoch_are_accepted(planner):
    planner.gate(RUNNING, 3)
    assert planner.result(epoch=3).accepted
    refused = planner.result(epoch=3, actionable=False)
    assert not refused.accepted and refused.reason == "not actionable: peer: not actionable"
    assert "old" in planner.result(epoch=3, age_s=MAX_AGE_S + 1).reason


def test_after_a_pause_results_of_the_old_epoch_are_refused_even_if_actionable(planner):
    planner.gate(RUNNING, 3)
    assert planner.result(epoch=3).accepted
    planner.gate(PAUSED, 4)
    # What the segmentation node decided before it heard the PAUSE, arriving after it.
    paused = planner.result(epoch=3)
    assert not paused.accepted and paused.reason == "gate PAUSED (transition 4)"
    planner.gate(RUNNING, 5)
    stale = planner.result(epoch=3)
    assert not stale.accepted and "older gate epoch 3" in stale.reason
    assert not planner.result(epoch=6).accepted  # an epoch the planner has not heard of yet
    assert planner.result(epoch=5).accepted


def test_heartbeats_keep_the_gate_and_silence_loses_it(planner):
    planner.gate(RUNNING, 3)
    guard, clock = planner.guarded.guard, planner.node.get_clock()
    transition_heard = guard.gate.heard_ns
    # Longer than gate_timeout_s after the transition, heard again since through heartbeats only.
    spin_until(planner.node, lambda: clock.now().nanoseconds - transition_heard > 2 * GATE_TIMEOUT_S * 1e9,
               "two gate timeouts", timeout_s=4 * GATE_TIMEOUT_S)
    assert guard.gate.heard_ns > transition_heard
    assert planner.result(epoch=3).accepted

    planner.send("silence")
    spin_until(planner.node, lambda: clock.now().nanoseconds - guard.gate.heard_ns > GATE_TIMEOUT_S * 1e9,
               "the gate to fall silent for gate_timeout_s", timeout_s=4 * GATE_TIMEOUT_S)
    lost = planner.result(epoch=3)
    assert not lost.accepted and lost.reason.startswith("gate lost: not heard for")

    planner.gate(RUNNING, 3)  # the same transition again: a heartbeat, the gate is back
    assert planner.result(epoch=3).accepted
