"""The safety gate's rules, persistence and log (ROS-free)."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segmentation_node.contract import Command, GateState
from segmentation_node.gate import PERSISTENCE_FAULT, SYSTEM_OPERATOR, SafetyGate, normalise_operator_id
from segmentation_node.gate_journal import GateJournal


def make_gate(tmp_path, allowed=("alice", "bob")):
    return SafetyGate(GateJournal(tmp_path / "gate.json", tmp_path / "gate.log"), allowed)


@pytest.fixture
def gate(tmp_path):
    return make_gate(tmp_path)


def logged(tmp_path, event="transition"):
    lines = [json.loads(line) for line in (tmp_path / "gate.log").read_text().splitlines()]
    return [r for r in lines if r.get("event") == event]


def test_starts_paused_and_resumes_on_an_allowed_operator(gate):
    assert gate.status.state is GateState.PAUSED
    refused = gate.command(Command.RESUME, "mallory", "let me")
    assert not refused.accepted and "may not resume" in refused.reason and refused.status.state is GateState.PAUSED
    answer = gate.command(Command.RESUME, "alice", "bin refilled")
    assert answer.accepted and answer.status.state is GateState.RUNNING
    assert answer.status.operator_id == "alice" and answer.status.reason == "bin refilled"


@pytest.mark.parametrize("operator, reason", [
    ("visitor-7", ""), ("", ""), ("x" * 500, ""), ("alice\nFAKE LOG LINE", "r\x00\x1b[31m"), ("alice", "y" * 5000)])
def test_pause_is_never_refused(gate, operator, reason):
    gate.command(Command.RESUME, "alice")
    answer = gate.command(Command.PAUSE, operator, reason)
    assert answer.accepted and answer.status.state is GateState.PAUSED and answer.status.previous_state is GateState.RUNNING
    assert "\n" not in answer.status.operator_id and "\x00" not in answer.status.reason
    assert len(answer.status.operator_id) <= 64 and len(answer.status.reason) <= 256 and answer.status.operator_id


def test_hand_needs_approval_on_a_frame_set_of_the_stop_itself(gate):
    epoch = gate.command(Command.RESUME, "alice").status.transition_count
    status = gate.observe(("hand",), {}, epoch)
    assert status.state is GateState.AWAITING_APPROVAL and status.operator_id == SYSTEM_OPERATOR
    assert status.active_faults == ("hand",)
    stop = status.transition_count
    resume = gate.command(Command.RESUME, "alice")
    assert not resume.accepted and "needs APPROVE" in resume.reason
    gate.observe((), {}, epoch)  # decided before the stop, still in flight: proves nothing
    early = gate.command(Command.APPROVE, "alice")
    assert not early.accepted and "no frame set decided since this stop" in early.reason
    gate.observe(("hand",), {}, stop)
    assert "still in the workspace" in gate.command(Command.APPROVE, "alice").reason
    gate.observe((), {}, stop)
    assert gate.status.state is GateState.AWAITING_APPROVAL, "the hand leaving does not resume"
    assert not gate.command(Command.APPROVE, "mallory").accepted
    approved = gate.command(Command.APPROVE, "bob", "cell clear")
    assert approved.accepted and approved.status.state is GateState.RUNNING


def test_an_older_frame_set_adds_faults_but_never_clears_them(gate):
    epoch = gate.command(Command.RESUME, "alice").status.transition_count
    fault = gate.observe((), {"camera cam_left": "STALE no image for 1.5 s"}, epoch)
    assert fault.state is GateState.FAULT and "cam_left" in fault.reason and fault.active_faults == ("camera cam_left",)
    refused = gate.command(Command.RESUME, "alice")
    assert not refused.accepted and "fault still active" in refused.reason
    gate.observe((), {}, epoch)
    assert not gate.command(Command.RESUME, "alice").accepted, "a frame set from before the fault cleared it"
    gate.observe((), {}, fault.transition_count)
    assert gate.status.state is GateState.FAULT and gate.status.active_faults == (), "cleared, waits for the operator"
    assert gate.command(Command.RESUME, "alice").accepted


def test_a_fault_whose_detail_changes_is_not_a_new_status(gate):
    epoch = gate.command(Command.RESUME, "alice").status.transition_count
    first = gate.observe((), {"camera cam_left": "STALE no image for 0.6 s"}, epoch)
    again = gate.observe((), {"camera cam_left": "STALE no image for 0.9 s"}, first.transition_count)
    assert again is first


def test_resume_refused_while_a_hand_is_in_view_even_when_paused(gate):
    gate.observe(("hand",), {}, gate.status.transition_count)
    answer = gate.command(Command.RESUME, "alice")
    assert not answer.accepted and "hand" in answer.reason


@pytest.mark.parametrize("command, operator, message", [
    (Command.NONE, "alice", "no command"),
    (99, "alice", "unknown command"),
    (Command.RESUME, "", "operator id"),
    (Command.RESUME, "x" * 65, "operator id"),
    (Command.RESUME, "alice\x00evil", "control characters"),
    (Command.APPROVE, "alice", "nothing to approve"),
])
def test_bad_commands_are_refused_with_a_reason(gate, command, operator, message):
    answer = gate.command(command, operator)
    assert not answer.accepted and message in answer.reason and answer.status.state is GateState.PAUSED


def test_operator_ids_are_normalised(tmp_path):
    assert normalise_operator_id(" alice ") == "alice"
    assert normalise_operator_id("ａｌｉｃｅ") == "alice"  # fullwidth letters are NFKC-equal
    for forged in ("alice\x00evil", "ali\u200bce", "alice\x1b"):
        with pytest.raises(ValueError):
            normalise_operator_id(forged)
    gate = make_gate(tmp_path, allowed=("alice",))
    assert gate.command(Command.RESUME, "ａｌｉｃｅ ").accepted
    with pytest.raises(ValueError, match="control"):
        make_gate(tmp_path / "other", allowed=("bob\x07",))


def test_an_empty_allowlist_lets_nobody_resume_and_is_recorded(tmp_path):
    gate = make_gate(tmp_path, allowed=())
    answer = gate.command(Command.RESUME, "alice")
    assert not answer.accepted and "allowed_operators is empty" in answer.reason
    assert gate.command(Command.PAUSE, "anyone").accepted
    assert [r["allowed_operators"] for r in logged(tmp_path, "start")] == [[]]
    make_gate(tmp_path, allowed=("carol",))
    assert [r["allowed_operators"] for r in logged(tmp_path, "start")] == [[], ["carol"]]


@pytest.mark.parametrize("before, after", [
    ("RUNNING", GateState.PAUSED), ("FAULT", GateState.PAUSED),
    ("AWAITING_APPROVAL", GateState.AWAITING_APPROVAL), ("PAUSED", GateState.PAUSED),
])
def test_restart_never_comes_back_running(tmp_path, before, after):
    first = make_gate(tmp_path)
    epoch = first.command(Command.RESUME, "alice").status.transition_count
    if before == "FAULT":
        first.observe((), {"camera cam": "stale"}, epoch)
    elif before == "AWAITING_APPROVAL":
        first.observe(("hand",), {}, epoch)
    elif before == "PAUSED":
        first.command(Command.PAUSE, "alice")
    first.flush()
    assert first.status.state.name == before
    restarted = make_gate(tmp_path)
    assert restarted.status.state is after
    assert restarted.status.previous_state.name == before
    assert restarted.status.transition_count == first.status.transition_count + 1


def test_restart_keeps_the_cause_until_a_fresh_frame_set_clears_it(tmp_path):
    first = make_gate(tmp_path)
    epoch = first.command(Command.RESUME, "alice").status.transition_count
    first.observe(("hand",), {}, epoch)
    first.flush()
    restarted = make_gate(tmp_path)
    assert restarted.status.state is GateState.AWAITING_APPROVAL and restarted.status.active_faults == ("hand",)
    assert not restarted.command(Command.APPROVE, "alice").accepted, "no frame set seen since the restart"
    restarted.observe(("hand",), {}, restarted.status.transition_count)
    assert not restarted.command(Command.APPROVE, "alice").accepted
    restarted.observe((), {}, restarted.status.transition_count)
    assert restarted.command(Command.APPROVE, "alice").accepted

    faulted = make_gate(tmp_path / "f")
    epoch = faulted.command(Command.RESUME, "alice").status.transition_count
    faulted.observe((), {"model": "RuntimeError"}, epoch)
    faulted.flush()
    again = make_gate(tmp_path / "f")
    assert again.status.state is GateState.PAUSED and "fault still active" in again.command(Command.RESUME, "alice").reason
    again.observe((), {}, again.status.transition_count)
    assert again.command(Command.RESUME, "alice").accepted


class FailingJournal(GateJournal):
    """The real journal on a disk that can be made to fail (full, read-only, gone)."""

    def __init__(self, tmp_path):
        super().__init__(tmp_path / "gate.json", tmp_path / "gate.log")
        self.failing = False

    def append(self, record):
        if self.failing:
            raise OSError(28, "No space left on device", str(self.log_file))
        super().append(record)


def test_pause_on_a_failing_disk_takes_effect_then_faults_and_recovers(tmp_path):
    journal = FailingJournal(tmp_path)
    gate = SafetyGate(journal, ("alice",))
    gate.command(Command.RESUME, "alice")
    journal.failing = True
    answer = gate.command(Command.PAUSE, "bob")
    assert answer.accepted and gate.status.state is GateState.PAUSED, "in memory before any write"
    assert gate.flush() and gate.status.state is GateState.FAULT
    assert PERSISTENCE_FAULT in gate.status.active_faults and "No space left" in gate.persistence_error
    refused = gate.command(Command.RESUME, "alice")
    assert not refused.accepted and "cannot persist" in refused.reason
    assert gate.command(Command.PAUSE, "bob").accepted
    journal.failing = False
    assert gate.flush() and not gate.persistence_error and gate.status.active_faults == ()
    assert [r["state"] for r in logged(tmp_path)][-4:] == ["RUNNING", "PAUSED", "FAULT", "PAUSED"], "nothing lost"
    assert gate.command(Command.RESUME, "alice").accepted


def test_resume_that_cannot_be_recorded_does_not_resume(tmp_path):
    journal = FailingJournal(tmp_path)
    gate = SafetyGate(journal, ("alice",))
    journal.failing = True
    answer = gate.command(Command.RESUME, "alice")
    assert not answer.accepted and "not resumed" in answer.reason and gate.status.state is GateState.FAULT


@pytest.mark.parametrize("damage", ["not json", "negative", "huge", "nested", "directory", "wrong type", "empty"])
def test_a_bad_state_file_starts_paused_says_why_and_is_moved_aside(tmp_path, damage):
    state_file = tmp_path / "gate.json"
    content = {"not json": "{not json", "negative": '{"state": "RUNNING", "transition_count": -5}',
               "huge": '{"state": "RUNNING", "transition_count": 99999999999999}',
               "nested": "[" * 100000 + "]" * 100000, "wrong type": '["RUNNING"]', "empty": ""}.get(damage)
    if damage == "directory":
        state_file.mkdir()
    else:
        state_file.write_text(content)
    gate = SafetyGate(GateJournal(state_file, None), ("alice",))
    assert gate.status.state is GateState.PAUSED
    assert gate.start_problem.startswith("state file unreadable:") and "moved to gate.json.corrupt-" in gate.start_problem
    assert gate.status.reason.startswith("started after state file unreadable")
    assert any(p.name.startswith("gate.json.corrupt-") for p in tmp_path.iterdir())
    assert state_file.is_file() and not gate.persistence_error, "a fresh state file replaces it"


def test_a_kill_between_log_and_state_file_loses_nothing_and_temporaries_are_removed(tmp_path):
    gate = make_gate(tmp_path)
    gate.command(Command.RESUME, "alice")
    state_before = (tmp_path / "gate.json").read_bytes()
    gate.command(Command.PAUSE, "bob", "lunch")
    gate.flush()
    (tmp_path / "gate.json").write_bytes(state_before)  # as if killed after the log append
    (tmp_path / ".gate.json.abc123.tmp").write_text("{torn")
    with open(tmp_path / "gate.log", "a") as log:
        log.write('{"event": "transition", "state": "RUN')  # a torn last line
    restarted = make_gate(tmp_path)
    assert restarted.status.previous_state is GateState.PAUSED and restarted.status.transition_count == 3
    assert not list(tmp_path.glob(".gate.json.*.tmp"))


def test_every_transition_is_logged(tmp_path):
    gate = make_gate(tmp_path)
    gate.command(Command.RESUME, "alice", "go")
    gate.command(Command.PAUSE, "bob", "lunch")
    gate.flush()
    records = logged(tmp_path)
    assert [r["state"] for r in records] == ["PAUSED", "RUNNING", "PAUSED"]
    assert [r["operator_id"] for r in records[1:]] == ["alice", "bob"]
    assert [r["transition_count"] for r in records] == [0, 1, 2]


operators = st.sampled_from(["alice", "mallory", "", "alice\x00", " bob "])
steps = st.lists(st.one_of(
    st.tuples(st.just("command"), st.sampled_from(list(Command) + [77]), operators),
    st.tuples(st.just("observe"), st.sampled_from([(), ("hand",)]), st.booleans(), st.integers(-1, 1)),
    st.tuples(st.just("disk"), st.booleans()),
    st.tuples(st.just("flush"))), max_size=40)


@settings(max_examples=300, deadline=None)
@given(steps=steps)
def test_gate_invariants_over_random_interleavings(tmp_path_factory, steps):
    journal = FailingJournal(tmp_path_factory.mktemp("gate"))
    gate = SafetyGate(journal, ("alice", "bob"))
    for step in steps:
        before = gate.status
        if step[0] == "command":
            answer = gate.command(step[1], step[2])
            if step[1] == Command.PAUSE:
                assert answer.accepted and gate.status.state is GateState.PAUSED, "PAUSE is never refused"
            if gate.status.state is GateState.RUNNING and before.state is not GateState.RUNNING:
                assert answer.accepted and normalise_operator_id(step[2]) in {"alice", "bob"}
                assert not gate.persistence_error, "never RUNNING unless the disk took it"
        elif step[0] == "observe":
            faults = {"camera cam": "STALE"} if step[2] else {}
            gate.observe(step[1], faults, gate.status.transition_count + step[3])
            if step[1] or faults:
                assert gate.status.state is not GateState.RUNNING
        elif step[0] == "disk":
            journal.failing = step[1]
        else:
            gate.flush()
        if gate.persistence_error:
            assert gate.status.state is not GateState.RUNNING
        assert gate.status.transition_count >= before.transition_count
    journal.failing = False
    gate.flush()
    assert logged(journal.log_file.parent)[-1]["transition_count"] == gate.status.transition_count, "nothing lost"
