"""The segmentation node's view of the safety gate (ROS-free).

The gate is trusted only when its messages come from the configured gate node, parse, and keep
arriving (the gate republishes its state every heartbeat period). Anything else is "not
RUNNING" with a reason: never heard, silent for longer than the timeout, a state value this node
does not know, or another node publishing on the gate topic (an impostor or a forgotten tool;
SROS2 access control is the production answer, this check makes the mistake visible).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

from segmentation_node.contract import GateState
from segmentation_node.gate import printable


@dataclass(frozen=True)
class GateView:
    state: GateState  # what the node may act on: UNKNOWN whenever `problem` is set
    epoch: int        # GateState.transition_count of the newest trusted message (0: none)
    problem: str = ""  # why the gate cannot be trusted, "" if it can


class GateMonitor:
    def __init__(self, gate_node: str, timeout_s: float):
        if timeout_s <= 0:
            raise ValueError(f"gate timeout must be > 0 s, got {timeout_s}")
        self.gate_node, self.timeout_s = gate_node, timeout_s
        self._lock = threading.Lock()
        self._state_value: int | None = None
        self._epoch = 0
        self._heard_s: float | None = None
        self._foreign: tuple[str, ...] = ()

    def heard(self, state_value: int, epoch: int, now_s: float, publisher: str | None) -> str | None:
        """One gate_state message (`publisher`: its node's full name, None when the middleware
        cannot say). Returns why it was ignored, else None."""
        if publisher is not None and publisher != self.gate_node:
            with self._lock:
                self._foreign = tuple(sorted({*self._foreign, publisher}))
            return f"gate_state from {printable(publisher, 120)} ignored: only {self.gate_node} is the gate"
        with self._lock:
            self._state_value, self._epoch, self._heard_s = int(state_value), int(epoch), now_s
        return None

    def publishers(self, names: list[str]) -> None:
        """The nodes publishing on the gate topic now (from the ROS graph)."""
        with self._lock:
            self._foreign = tuple(sorted({n for n in names if n != self.gate_node}))

    def view(self, now_s: float) -> GateView:
        with self._lock:
            value, epoch, heard_s, foreign = self._state_value, self._epoch, self._heard_s, self._foreign
        if foreign:
            problem = f"{', '.join(printable(n, 120) for n in foreign)} also publish(es) gate_state; " \
                      f"only {self.gate_node} may"
        elif heard_s is None:
            problem = f"no gate_state from {self.gate_node} yet"
        elif now_s - heard_s > self.timeout_s:
            problem = f"no gate_state from {self.gate_node} for {now_s - heard_s:.1f} s (limit {self.timeout_s:g} s)"
        elif value not in GateState._value2member_map_:
            problem = f"gate_state carries unknown state {value}"
        else:
            return GateView(GateState(value), epoch)
        return GateView(GateState.UNKNOWN, epoch, problem)
