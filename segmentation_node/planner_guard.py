"""The grasp planner's last check before it acts on a frame-set result (ROS-free).

"Act only on results marked actionable" is not enough on its own: the gate (operator_intent)
and the verdicts (segmentation) come from two publishers, so a result decided while the gate
was RUNNING can reach a planner after the planner has already heard PAUSE. The guard accepts a
result only if, from the planner's own view of the wire:

- the result is actionable and was decided with the gate RUNNING;
- the newest gate state the planner heard is RUNNING, and the gate was heard (transition or
  heartbeat) within `gate_timeout_s`: a gate that fell silent is a lost gate;
- the result was decided under exactly that RUNNING state (`gate_epoch` == its
  `transition_count`): a verdict from before a PAUSE + RESUME is refused, and so is one from an
  epoch the planner has not heard yet (the PAUSE it was decided under may still be in flight);
- its newest source image is younger than `max_age_s`.

Clock: every time given to the guard (`now_ns`) is the consumer's clock in the time base the
cameras stamp their images in, i.e. the planner node's ROS clock (system time, or /clock with
use_sim_time). Gate silence and result age are both measured on it.

The ros/ wrapper (segmentation_node.ros.planner_guard.GuardedResults) feeds it from DDS.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from segmentation_node.contract import GateState

_NS = 1_000_000_000


@dataclass(frozen=True)
class GuardDecision:
    accepted: bool
    reason: str  # one line: why accepted, or the first reason it was not


@dataclass(frozen=True)
class HeardGate:
    """The newest gate state the guard holds, and when it was last heard (transition or heartbeat)."""

    state: int
    transition_count: int
    heartbeat_period_s: float
    heard_ns: int


def _state_name(state: int) -> str:
    try:
        return GateState(state).name
    except ValueError:
        return f"state {state}"


def _seconds(name: str, value: float, zero_allowed: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not zero_allowed):
        raise ValueError(f"{name} must be a finite number of seconds {'>=' if zero_allowed else '>'} 0, "
                         f"got {value!r}")
    return float(value)


def _integer(name: str, value: int, minimum: int | None = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        raise ValueError(f"{name} must be an integer{'' if minimum is None else f' >= {minimum}'}, got {value!r}")
    return value


class PlannerGuard:
    """Feed it every gate state (`on_gate`) and ask it about every result (`check`), from one
    thread at a time (GuardedResults puts both callbacks in one mutually exclusive group)."""

    def __init__(self, max_age_s: float, gate_timeout_s: float):
        self.max_age_s = _seconds("max_age_s", max_age_s)
        self.gate_timeout_s = _seconds("gate_timeout_s", gate_timeout_s)
        self._gate: HeardGate | None = None
        # Highest transition_count of any non-RUNNING state heard: no verdict decided at or
        # before it may be accepted, whatever order later messages arrive in.
        self._stopped_through = -1
        self._ignored = 0  # gate states ignored as out of order since the newest was taken

    @property
    def gate(self) -> HeardGate | None:
        return self._gate

    def on_gate(self, state: int, transition_count: int, heartbeat_period_s: float, now_ns: int) -> bool:
        """Take a gate state; False if it was ignored as older than the newest one heard."""
        _integer("state", state)
        _integer("transition_count", transition_count)
        _integer("now_ns", now_ns)
        heartbeat_period_s = _seconds("heartbeat_period_s", heartbeat_period_s, zero_allowed=True)
        if self._gate is not None and transition_count < self._gate.transition_count:
            self._ignored += 1
            return False
        self._ignored = 0
        if state != GateState.RUNNING:
            self._stopped_through = max(self._stopped_through, transition_count)
        self._gate = HeardGate(state, transition_count, heartbeat_period_s, now_ns)
        return True

    def check(self, actionable: bool, gate_state: int, gate_epoch: int, stamp_ns: int, now_ns: int,
              reasons: Sequence[str] = ()) -> GuardDecision:
        """Whether the planner may act on this result; `reasons` (the result's own) explain a refusal."""
        _integer("gate_state", gate_state)
        _integer("gate_epoch", gate_epoch)
        _integer("stamp_ns", stamp_ns, minimum=None)  # any stamp: a bad one is just too old or new
        _integer("now_ns", now_ns)
        if not actionable:
            return GuardDecision(False, "not actionable: " + ("; ".join(reasons) or "no reason given"))
        if gate_state != GateState.RUNNING:
            return GuardDecision(False, f"decided with the gate {_state_name(gate_state)}")
        gate = self._gate
        if gate is None:
            return GuardDecision(False, "no gate_state heard yet")
        if gate.state != GateState.RUNNING:
            return GuardDecision(False, f"gate {_state_name(gate.state)} (transition {gate.transition_count})")
        silent_s = (now_ns - gate.heard_ns) / _NS
        if not 0 <= silent_s <= self.gate_timeout_s:
            return GuardDecision(False, self._lost_gate(gate, silent_s))
        if gate_epoch != gate.transition_count:
            when = "an older" if gate_epoch < gate.transition_count else "a newer, not yet heard,"
            return GuardDecision(False, f"decided under {when} gate epoch {gate_epoch}; "
                                        f"the gate is RUNNING at epoch {gate.transition_count}")
        if gate_epoch <= self._stopped_through:
            return GuardDecision(False, f"gate epoch {gate_epoch} was also reported stopped")
        age_s = (now_ns - stamp_ns) / _NS
        if age_s >= self.max_age_s:
            return GuardDecision(False, f"source images {age_s:.3f} s old (max_age_s {self.max_age_s:g})")
        if age_s < -self.max_age_s:
            return GuardDecision(False, f"source images stamped {-age_s:.3f} s ahead of this clock: "
                                        "camera and planner clocks disagree")
        return GuardDecision(True, f"accepted: gate RUNNING at epoch {gate_epoch}, source images {age_s:.3f} s old")

    def _lost_gate(self, gate: HeardGate, silent_s: float) -> str:
        if silent_s < 0:
            return "this clock went back since the gate was last heard: waiting for the next gate message"
        if gate.heartbeat_period_s == 0:
            hint = "it promises no heartbeat (heartbeat_period_s 0): an operator_intent without heartbeats?"
        elif gate.heartbeat_period_s >= self.gate_timeout_s:
            hint = f"its heartbeat period {gate.heartbeat_period_s:g} s is not below it: raise gate_timeout_s"
        else:
            hint = f"heartbeat promised every {gate.heartbeat_period_s:g} s"
        if self._ignored:
            # Only older transitions keep coming: a gate that restarted without its state file.
            hint += (f"; {self._ignored} gate state(s) with a transition_count below {gate.transition_count} "
                     "ignored since: did the gate lose its state? restart the planner")
        return f"gate lost: not heard for {silent_s:.3f} s (gate_timeout_s {self.gate_timeout_s:g}; {hint})"
