"""The safety gate's rules, persistence and log (ROS-free)."""
import json

import pytest

from segmentation_node.contract import Command, GateState
from segmentation_node.gate import SYSTEM_OPERATOR, SafetyGate


@pytest.fixture
def gate(tmp_path):
    return SafetyGate(tmp_path / "gate.json", tmp_path / "gate.log", frozenset({"alice", "bob"}))


def test_starts_paused_and_resumes_on_an_allowed_operator(gate):
    assert gate.status.state is GateState.PAUSED
    refused = gate.command(Command.RESUME, "mallory", "let me")
    assert not refused.accepted and "may not resume" in refused.reason and refused.status.state is GateState.PAUSED
    answer = gate.command(Command.RESUME, "alice", "bin refilled")
    assert answer.accepted and answer.status.state is GateState.RUNNING
    assert answer.status.operator_id == "alice" and answer.status.reason == "bin refilled"


def test_pause_is_always_accepted_from_anyone(gate):
    gate.command(Command.RESUME, "alice")
    answer = gate.command(Command.PAUSE, "visitor-7")
    assert answer.accepted and answer.status.state is GateState.PAUSED and answer.status.previous_state is GateState.RUNNING


def test_hand_needs_approval_not_resume(gate):
    gate.command(Command.RESUME, "alice")
    status = gate.observe(("hand",), {})
    assert status.state is GateState.AWAITING_APPROVAL and status.operator_id == SYSTEM_OPERATOR
    assert status.active_faults == ("hand",)
    resume = gate.command(Command.RESUME, "alice")
    assert not resume.accepted and "needs APPROVE" in resume.reason
    early = gate.command(Command.APPROVE, "alice")
    assert not early.accepted and "still in the workspace" in early.reason
    gate.observe((), {})
    assert gate.status.state is GateState.AWAITING_APPROVAL, "the hand leaving does not resume"
    assert not gate.command(Command.APPROVE, "mallory").accepted
    approved = gate.command(Command.APPROVE, "bob", "cell clear")
    assert approved.accepted and approved.status.state is GateState.RUNNING


def test_fault_holds_until_cleared_and_resumed(gate):
    gate.command(Command.RESUME, "alice")
    status = gate.observe((), {"cam_left": "no image for 1.5 s"})
    assert status.state is GateState.FAULT and "cam_left" in status.reason
    refused = gate.command(Command.RESUME, "alice")
    assert not refused.accepted and "fault still active" in refused.reason
    gate.observe((), {})
    assert gate.status.state is GateState.FAULT, "a cleared fault waits for the operator"
    assert gate.command(Command.RESUME, "alice").accepted


def test_resume_refused_while_a_hand_is_in_view_even_when_paused(gate):
    gate.observe(("hand",), {})
    answer = gate.command(Command.RESUME, "alice")
    assert not answer.accepted and "hand" in answer.reason


@pytest.mark.parametrize("command, operator, message", [
    (Command.NONE, "alice", "no command"),
    (99, "alice", "unknown command"),
    (Command.RESUME, "", "operator id"),
    (Command.RESUME, "x" * 65, "operator id"),
    (Command.APPROVE, "alice", "nothing to approve"),
])
def test_bad_commands_are_refused_with_a_reason(gate, command, operator, message):
    answer = gate.command(command, operator)
    assert not answer.accepted and message in answer.reason and answer.status.state is GateState.PAUSED


def test_oversized_reason_is_refused(gate):
    assert "longer than" in gate.command(Command.PAUSE, "alice", "x" * 1000).reason


@pytest.mark.parametrize("before, after", [
    ("RUNNING", GateState.PAUSED), ("FAULT", GateState.PAUSED),
    ("AWAITING_APPROVAL", GateState.AWAITING_APPROVAL), ("PAUSED", GateState.PAUSED),
])
def test_restart_never_comes_back_running(tmp_path, before, after):
    state_file = tmp_path / "gate.json"
    first = SafetyGate(state_file, tmp_path / "gate.log")
    first.command(Command.RESUME, "alice")
    if before == "FAULT":
        first.observe((), {"cam": "stale"})
    elif before == "AWAITING_APPROVAL":
        first.observe(("hand",), {})
    elif before == "PAUSED":
        first.command(Command.PAUSE, "alice")
    assert first.status.state.name == before
    restarted = SafetyGate(state_file, tmp_path / "gate.log")
    assert restarted.status.state is after
    assert restarted.status.previous_state.name == before
    assert restarted.status.transition_count == first.status.transition_count + 1


def test_every_transition_is_logged_and_a_corrupt_state_file_starts_paused(tmp_path):
    gate = SafetyGate(tmp_path / "gate.json", tmp_path / "gate.log")
    gate.command(Command.RESUME, "alice", "go")
    gate.command(Command.PAUSE, "bob", "lunch")
    records = [json.loads(line) for line in (tmp_path / "gate.log").read_text().splitlines()]
    assert [r["state"] for r in records] == ["PAUSED", "RUNNING", "PAUSED"]
    assert [r["operator_id"] for r in records[1:]] == ["alice", "bob"]
    (tmp_path / "gate.json").write_text("{not json")
    assert SafetyGate(tmp_path / "gate.json").status.state is GateState.PAUSED
