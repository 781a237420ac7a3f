"""The safety gate fails safe over real DDS: operator_intent, segmentation (classical backend)
and an independent consumer in their own processes. A PAUSE on a broken disk, a gate killed with
-9, a forged gate publisher: the cell stops, says why, and the nodes keep running."""
import contextlib
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from diagnostic_msgs.msg import DiagnosticStatus
import rclpy
from rclpy.node import Node

from segmentation_node.contract import OPERATOR_NODE, Command, Reason
from segmentation_node.contract import GateState as State
from segmentation_node.planner_guard import PlannerGuard
from segmentation_node.ros.messages import endpoint_qos
from tests.ros.cell_stream import make_cell
from tests.ros.harness import node_process
from tests.ros.safety_rig import SafetyRig, stamp_ns
from tests.small_disk import small_disk
from workcell_segmentation.msg import GateState

GATE_TIMEOUT_S = 1.5


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fail_safe")
    renders, hand = make_cell(folder)
    calm = [i for i, h in enumerate(hand) if not h][:6]
    args = ("-p", f"commissioning_file:={folder / 'cell.npz'}", "-p", "stale_after_s:=1.0",
            "-p", f"gate_timeout_s:={GATE_TIMEOUT_S}", "-p", "publish_masks:=false")
    rclpy.init()
    try:
        with node_process("segmentation_node.ros.segmentation", *args,
                          log_path=folder / "segmentation.log") as segmentation:
            rig = SafetyRig(renders, calm)
            try:
                rig.folder, rig.segmentation = folder, segmentation
                yield rig
            finally:
                rig.close()
            assert segmentation.poll() is None, "the segmentation node died"
    finally:
        rclpy.try_shutdown()


def operator(rig, state_dir: Path, name: str):
    return node_process("segmentation_node.ros.operator_node", "-p", f"state_file:={state_dir / 'gate.json'}",
                        "-p", f"transition_log:={state_dir / 'gate.log'}", "-p", "allowed_operators:=[alice]",
                        "-p", "initial_intent:=pick everything", log_path=rig.folder / f"{name}.log")


def nothing_actionable_after(rig, received_at_ns: int, epoch: int, frames: int = 5) -> None:
    """Results keep coming; none for images sent after `received_at_ns` is actionable, and any
    actionable one received after it was decided under an epoch before `epoch` (in flight)."""
    start = len(rig.results)
    rig.wait(lambda: sum(stamp_ns(r) > received_at_ns for r in rig.results[start:]) >= frames,
             f"{frames} results of frames sent after the stop")
    later = [r for r in rig.results if r.at_ns > received_at_ns]
    assert not [r for r in later if stamp_ns(r) > received_at_ns and r.message.actionable]
    assert all(r.message.gate_epoch < epoch for r in later if r.message.actionable)


BREAKS = ["full disk", "read-only disk", "state file becomes a directory", "state dir deleted"]


@pytest.mark.parametrize("damage", BREAKS)
def test_pause_on_a_broken_disk_is_accepted_published_and_stops_the_cell(rig, tmp_path, damage):
    state_dir = tmp_path / "state"
    with contextlib.ExitStack() as disk:
        if damage in ("full disk", "read-only disk"):
            disk.enter_context(small_disk(state_dir))
        with operator(rig, state_dir, f"operator_{damage.replace(' ', '_')}") as process:
            resumed = rig.resume_until_actionable()
            if damage == "full disk":
                descriptor = os.open(state_dir / "filler", os.O_WRONLY | os.O_CREAT)
                try:
                    while os.write(descriptor, b"\0" * 512):
                        pass
                except OSError:  # ENOSPC: the disk is full
                    pass
                finally:
                    os.close(descriptor)
            elif damage == "read-only disk":
                subprocess.run(["mount", "-o", "remount,ro", str(state_dir)], check=True)
            elif damage == "state file becomes a directory":
                (state_dir / "gate.json").unlink()
                (state_dir / "gate.json").mkdir()
            else:
                shutil.rmtree(state_dir)
            gates_before = len(rig.gates)
            sent_ns = time.time_ns()
            answer = rig.command(Command.PAUSE, operator="", reason="x" * 2000)
            assert answer.accepted, answer.reason
            paused = rig.gate_after(gates_before, lambda g: g.state in (State.PAUSED, State.FAULT), "the stop")
            print(f"{damage}: PAUSE sent -> stop received {(paused.at_ns - sent_ns) / 1e6:.1f} ms")  # -rP
            assert paused.message.transition_count > resumed.message.gate_epoch
            nothing_actionable_after(rig, paused.at_ns, paused.message.transition_count)
            if damage == "state dir deleted":  # recreated: nothing failed
                assert "PAUSED" in (state_dir / "gate.json").read_text()
            else:
                fault = rig.gate_after(gates_before, lambda g: "persistence" in g.active_faults,
                                       "FAULT persistence")
                assert fault.message.state == State.FAULT and "cannot persist" in fault.message.reason
                refused = rig.command(Command.RESUME)
                assert not refused.accepted and "cannot persist" in refused.reason
                rig.wait(lambda: any(s.name == f"{OPERATOR_NODE}: gate" and s.level == DiagnosticStatus.ERROR and "cannot persist"
                                     in s.message for d in rig.diagnostics for s in d.status), "diagnostics ERROR")
            assert process.poll() is None, "operator_intent died"
        log = (rig.folder / f"operator_{damage.replace(' ', '_')}.log").read_text()
        assert "Traceback" not in log


def test_a_killed_gate_is_a_lost_gate_and_a_restarted_one_is_paused(rig, tmp_path):
    with operator(rig, tmp_path, "operator_killed") as process:
        rig.resume_until_actionable()
        killed_at = len(rig.results)
        process.kill()
        process.wait()
    lost = rig.result_after(killed_at, lambda r: Reason.GATE_LOST in r.reason_codes, "a GATE_LOST result")
    # Silent, or (until its lease runs out) still in the graph under no node name: a stranger.
    why = " ".join(lost.message.reasons)
    assert not lost.message.actionable and ("no gate_state from /operator_intent" in why
                                            or "_NODE_NAME_UNKNOWN_ also publish(es) gate_state" in why), why
    index = rig.results.index(lost)
    rig.wait(lambda: len(rig.results) >= index + 5, "five more results")
    assert not any(r.message.actionable for r in rig.results[index:])
    print(f"kill -9 -> first GATE_LOST result: {(lost.at_ns - rig.results[killed_at - 1].at_ns) / 1e6:.0f} ms "
          f"(gate_timeout_s {GATE_TIMEOUT_S})")
    with operator(rig, tmp_path, "operator_restarted"):
        index = len(rig.results)
        back = rig.result_after(index, lambda r: Reason.GATE_NOT_RUNNING in r.reason_codes, "the restarted gate")
        assert back.message.gate_state == State.PAUSED and not back.message.actionable
        rig.resume_until_actionable()


def test_gate_state_from_anyone_but_the_gate_makes_nothing_actionable(rig, tmp_path):
    with operator(rig, tmp_path, "operator_forged") as process:
        rig.resume_until_actionable()
        with forger(rig) as forged:
            for state in (State.RUNNING, 99):
                forged.publish(GateState(state=int(state), transition_count=99, operator_id="mallory"))
            index = len(rig.results)
            # Until the node has heard of mallory (discovery, then her message) its gate is the
            # real one and results may be actionable; from its first GATE_LOST on, none may be.
            lost = rig.result_after(index, lambda r: Reason.GATE_LOST in r.reason_codes, "GATE_LOST")
            detected = rig.results.index(lost)
            # The graph may know the new publisher before it knows its node's name: a stranger
            # either way, named once the name has arrived.
            blocked = rig.result_after(detected, lambda r: Reason.GATE_LOST in r.reason_codes
                                       and "/mallory" in " ".join(r.reasons), "GATE_LOST naming mallory")
            assert not any(r.message.actionable for r in rig.results[detected:])
            after = rig.results.index(blocked)
            rig.wait(lambda: len(rig.results) >= after + 4, "more results while mallory publishes")
            assert not any(r.message.actionable for r in rig.results[after:])
        index = len(rig.results)
        rig.result_after(index, lambda r: r.actionable, "actionable again once mallory is gone")
        # Forged RUNNING while the real gate is PAUSED: still nothing.
        assert rig.command(Command.PAUSE).accepted
        with forger(rig) as forged:
            forged.publish(GateState(state=int(State.RUNNING), transition_count=1000, operator_id="mallory"))
            index = len(rig.results)
            rig.result_after(index, lambda r: Reason.GATE_LOST in r.reason_codes, "GATE_LOST while paused")
            assert not any(r.message.actionable for r in rig.results[index:])
        assert process.poll() is None and rig.segmentation.poll() is None


@contextlib.contextmanager
def forger(rig):
    """A node "mallory" in the consumer's process publishing on gate_state; always removed, so
    a failed check cannot leave a stranger behind for the next test."""
    mallory = Node("mallory")
    try:
        yield mallory.create_publisher(GateState, "gate_state", endpoint_qos(OPERATOR_NODE, "gate_state"))
    finally:
        mallory.destroy_node()


def test_fifty_pauses_at_random_moments_leave_nothing_for_the_planner(rig, tmp_path):
    """Issue 13: results flow actionable, the operator pauses at random moments. Every result is
    checked as a planner receives it: actionable only with gate_state RUNNING; after PAUSED has
    been received, an actionable result can only be one decided before the pause (in flight on
    the other publisher), and the planner guard accepts none of them."""
    chooser = random.Random(13)
    pauses = []
    results_before, gates_before_test = len(rig.results), len(rig.gates)  # earlier tests' gates differ
    with operator(rig, tmp_path, "operator_pauses"):
        for _ in range(50):
            rig.resume_until_actionable()
            index = len(rig.results)
            rig.result_after(index, lambda r: True, "a result", timeout_s=10)  # somewhere in the stream
            if chooser.random() < 0.5:
                rig.result_after(len(rig.results), lambda r: True, "another result", timeout_s=10)
            gates_before = len(rig.gates)
            assert rig.command(Command.PAUSE, reason="random pause").accepted
            pauses.append(rig.gate_after(gates_before, lambda g: g.state == State.PAUSED, "PAUSED"))
        rig.result_after(len(rig.results), lambda r: True, "a last result")
    events = sorted([(r.at_ns, 1, r) for r in rig.results[results_before:]]
                    + [(g.at_ns, 0, g) for g in rig.gates[gates_before_test:]], key=lambda e: (e[0], e[1]))
    guard = PlannerGuard(max_age_s=5.0, gate_timeout_s=GATE_TIMEOUT_S)
    accepted_after_pause = late_raw = 0
    paused_epoch = stop = None
    for at_ns, kind, item in events:
        message = item.message
        if kind == 0:
            guard.on_gate(message.state, message.transition_count, message.heartbeat_period_s, at_ns)
            paused_epoch = message.transition_count if message.state != State.RUNNING else None
            stop = (at_ns, message.state, message.transition_count, message.operator_id, message.reason)
            continue
        assert not message.actionable or message.gate_state == State.RUNNING
        if paused_epoch is not None and message.actionable:
            assert message.gate_epoch < paused_epoch, f"decided under the stop {stop}, received at {at_ns}"
            late_raw += 1
        decision = guard.check(message.actionable, message.gate_state, message.gate_epoch, stamp_ns(item), at_ns)
        if decision.accepted and paused_epoch is not None:
            accepted_after_pause += 1
    print(f"50 pauses: {late_raw} actionable results were still in flight when PAUSED arrived; "
          f"the planner guard accepted {accepted_after_pause} of them")
    assert len(pauses) == 50 and accepted_after_pause == 0
