"""The planner guard: which results a grasp planner may act on, whatever order the wire delivers."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segmentation_node.contract import GateState
from segmentation_node.planner_guard import PlannerGuard

S = 1_000_000_000
T0 = 1_700_000_000 * S  # a realistic ROS time, so stamps before it stay positive
RUNNING, PAUSED = int(GateState.RUNNING), int(GateState.PAUSED)


def running_guard(epoch=3, heartbeat=0.2):
    guard = PlannerGuard(max_age_s=0.5, gate_timeout_s=1.0)
    assert guard.on_gate(RUNNING, epoch, heartbeat, T0)
    return guard


def check(guard, epoch=3, now=T0, age_s=0.1, actionable=True, gate_state=RUNNING, reasons=()):
    return guard.check(actionable, gate_state, epoch, now - int(age_s * S), now, reasons)


def test_accepts_a_fresh_actionable_result_of_the_running_epoch():
    decision = check(running_guard())
    assert decision.accepted
    assert decision.reason.startswith("accepted: gate RUNNING at epoch 3")


@pytest.mark.parametrize("kwargs, why", [
    (dict(actionable=False, reasons=("a hand is in view", "camera cam_top is stale")),
     "not actionable: a hand is in view; camera cam_top is stale"),
    (dict(actionable=False), "not actionable: no reason given"),
    (dict(gate_state=PAUSED), "decided with the gate PAUSED"),
    (dict(gate_state=9), "decided with the gate state 9"),
    (dict(epoch=2), "decided under an older gate epoch 2; the gate is RUNNING at epoch 3"),
    (dict(epoch=4), "decided under a newer, not yet heard, gate epoch 4"),
    (dict(age_s=0.5), "source images 0.500 s old (max_age_s 0.5)"),
    (dict(age_s=-0.6), "source images stamped 0.600 s ahead of this clock"),
])
def test_refuses_with_the_reason(kwargs, why):
    decision = check(running_guard(), **kwargs)
    assert not decision.accepted
    assert why in decision.reason
    assert "\n" not in decision.reason


def test_a_small_clock_skew_ahead_is_tolerated():
    assert check(running_guard(), age_s=-0.2).accepted


def test_a_stamp_before_the_epoch_is_just_old():
    assert "old" in running_guard().check(True, RUNNING, 3, -5, T0).reason


def test_refuses_without_a_gate():
    decision = check(PlannerGuard(0.5, 1.0))
    assert (decision.accepted, decision.reason) == (False, "no gate_state heard yet")


def test_a_pause_refuses_results_of_the_epoch_before_it_even_if_actionable():
    guard = running_guard(epoch=3)
    assert guard.on_gate(PAUSED, 4, 0.2, T0 + S // 10)
    assert check(guard, epoch=3, now=T0 + S // 5).reason == "gate PAUSED (transition 4)"
    # RESUME: a verdict of the old epoch still in flight is refused, the new epoch's accepted.
    assert guard.on_gate(RUNNING, 5, 0.2, T0 + S // 5)
    assert not check(guard, epoch=3, now=T0 + S // 4).accepted
    assert check(guard, epoch=5, now=T0 + S // 4).accepted


def test_heartbeats_keep_the_gate_alive_and_silence_loses_it():
    guard = running_guard(heartbeat=0.2)
    for beat in range(1, 20):
        assert guard.on_gate(RUNNING, 3, 0.2, T0 + beat * S // 5)
    now = T0 + 19 * S // 5
    assert check(guard, now=now).accepted
    assert check(guard, now=now + S).accepted
    decision = check(guard, now=now + S + 1)
    assert not decision.accepted
    assert decision.reason == "gate lost: not heard for 1.000 s (gate_timeout_s 1; heartbeat promised every 0.2 s)"


@pytest.mark.parametrize("heartbeat, hint", [
    (0.0, "it promises no heartbeat"),
    (1.5, "its heartbeat period 1.5 s is not below it: raise gate_timeout_s"),
])
def test_a_lost_gate_says_what_to_fix(heartbeat, hint):
    decision = check(running_guard(heartbeat=heartbeat), now=T0 + 2 * S)
    assert not decision.accepted and hint in decision.reason


def test_a_clock_going_back_loses_the_gate_until_it_is_heard_again():
    guard = running_guard()
    assert "clock went back" in check(guard, now=T0 - S).reason
    guard.on_gate(RUNNING, 3, 0.2, T0 - S)
    assert check(guard, now=T0 - S).accepted


def test_gate_states_out_of_order_are_ignored():
    guard = running_guard(epoch=5)
    assert not guard.on_gate(PAUSED, 4, 0.2, T0 + 1)
    assert guard.gate.transition_count == 5 and guard.gate.heard_ns == T0
    assert check(guard, epoch=5).accepted


def test_a_gate_that_lost_its_count_is_lost_with_the_hint():
    guard = running_guard(epoch=5)
    guard.on_gate(PAUSED, 0, 0.2, T0 + 3 * S)
    decision = check(guard, epoch=5, now=T0 + 3 * S)
    assert not decision.accepted
    assert "1 gate state(s) with a transition_count below 5 ignored since" in decision.reason


def test_an_epoch_once_reported_stopped_is_never_accepted():
    # A RUNNING and a stop with the same transition_count contradict each other: stay stopped.
    guard = PlannerGuard(0.5, 1.0)
    guard.on_gate(PAUSED, 3, 0.2, T0)
    guard.on_gate(RUNNING, 3, 0.2, T0)
    assert check(guard, epoch=3).reason == "gate epoch 3 was also reported stopped"


@pytest.mark.parametrize("max_age_s, gate_timeout_s", [
    (0, 1.0), (-1, 1.0), (float("nan"), 1.0), (float("inf"), 1.0), (1.0, 0), (1.0, "1"), (True, 1.0)])
def test_rejects_bad_settings(max_age_s, gate_timeout_s):
    with pytest.raises(ValueError):
        PlannerGuard(max_age_s, gate_timeout_s)


@pytest.mark.parametrize("call", [
    lambda g: g.on_gate(RUNNING, -1, 0.2, T0),
    lambda g: g.on_gate(RUNNING, 1, -0.2, T0),
    lambda g: g.on_gate(RUNNING, 1, float("nan"), T0),
    lambda g: g.on_gate(RUNNING, 1, 0.2, 1.5),
    lambda g: g.on_gate(-1, 1, 0.2, T0),
    lambda g: g.check(True, RUNNING, -1, T0, T0),
    lambda g: g.check(True, RUNNING, 1, 1.5, T0),
    lambda g: g.check(True, RUNNING, 1, T0, None),
])
def test_rejects_bad_arguments(call):
    with pytest.raises(ValueError):
        call(PlannerGuard(0.5, 1.0))


# --- properties over random interleavings -----------------------------------------------------------
MAX_AGE_S, GATE_TIMEOUT_S = 0.5, 1.0
# Biased towards what gets accepted (RUNNING, actionable, short steps), so that the properties
# are exercised on many accepted results and not only on refusals.
mostly_running = st.one_of(st.just(RUNNING), st.just(RUNNING), st.sampled_from([int(s) for s in GateState] + [9]))
counts = st.integers(0, 4)  # few values: equal and out-of-order counts are common
steps_ns = st.one_of(st.integers(0, S // 5), st.integers(0, 3 * S // 2))
gate_event = st.tuples(st.just("gate"), steps_ns, mostly_running, counts, st.sampled_from([0.0, 0.2, 2.0]))
result_event = st.tuples(st.just("result"), steps_ns, st.one_of(st.just(True), st.booleans()), mostly_running,
                         counts, st.integers(-S * 3 // 4, S * 3 // 4))  # source age in ns
events = st.lists(st.one_of(gate_event, result_event), max_size=40)


@settings(max_examples=400, deadline=None)
@given(events)
def test_never_accepts_what_the_wire_has_already_contradicted(trace):
    guard = PlannerGuard(MAX_AGE_S, GATE_TIMEOUT_S)
    now, gates_heard = T0, []  # (count, state, heard_ns) of every gate message, in arrival order
    for event in trace:
        now += event[1]
        if event[0] == "gate":
            _, _, state, count, period = event
            guard.on_gate(state, count, period, now)
            gates_heard.append((count, state, now))
            continue
        _, _, actionable, gate_state, epoch, age_ns = event
        decision = guard.check(actionable, gate_state, epoch, now - age_ns, now)
        if not decision.accepted:
            continue
        newest_count = max(count for count, _, _ in gates_heard)
        _, newest_state, heard_ns = [g for g in gates_heard if g[0] == newest_count][-1]
        assert actionable and gate_state == RUNNING
        assert not any(state != RUNNING and count >= epoch for count, state, _ in gates_heard)
        assert newest_state == RUNNING and now - heard_ns <= GATE_TIMEOUT_S * S
        assert epoch == newest_count
        assert abs(age_ns) < MAX_AGE_S * S


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(steps_ns, counts), max_size=20), st.integers(0, S // 2 - 1))
def test_accepts_once_a_running_epoch_is_the_newest_heard(earlier_gates, age_ns):
    # Whatever came before (older, stopped or out-of-order states), a RUNNING state with a higher
    # transition_count than all of them opens its epoch to fresh results.
    guard, now = PlannerGuard(MAX_AGE_S, GATE_TIMEOUT_S), T0
    for step, count in earlier_gates:
        now += step
        guard.on_gate(PAUSED, count, 0.2, now)
    guard.on_gate(RUNNING, 7, 0.2, now)
    assert guard.check(True, RUNNING, 7, now - age_ns, now).accepted
