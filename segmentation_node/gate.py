"""The safety gate (ROS-free): states, operator commands, automatic stops, persistence.

- PAUSE is always accepted and immediate.
- A hand (any auto-pause class) while RUNNING -> AWAITING_APPROVAL; only APPROVE leaves it, and
  only once the class is out of view. RESUME there is refused: it needs approval.
- Stale camera, model error or sync failure while RUNNING -> FAULT; RESUME leaves it once the
  faults have cleared.
- RESUME and APPROVE need an allowed operator id when an allowlist is configured.
- Every transition is persisted atomically and appended to a transition log (fsync), and a
  restart never comes back RUNNING: RUNNING and FAULT come back PAUSED, AWAITING_APPROVAL stays.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from segmentation_node.atomic_io import atomic_write_bytes
from segmentation_node.contract import Command, GateState

SYSTEM_OPERATOR = "system"
MAX_OPERATOR_ID = 64
MAX_REASON = 256


@dataclass(frozen=True)
class GateStatus:
    state: GateState
    previous_state: GateState
    transition_count: int
    operator_id: str
    reason: str
    stamp_ns: int
    active_faults: tuple[str, ...] = ()


@dataclass(frozen=True)
class Answer:
    accepted: bool
    reason: str
    status: GateStatus


@dataclass
class SafetyGate:
    state_file: Path | None = None          # where the gate state survives restarts
    log_file: Path | None = None            # append-only JSON lines, one per transition
    allowed_operators: frozenset[str] = frozenset()  # empty: anyone may resume / approve
    clock_ns: Callable[[], int] = time.time_ns
    _status: GateStatus | None = None
    _faults: dict[str, str] = field(default_factory=dict)
    _auto_pause: tuple[str, ...] = ()

    def __post_init__(self):
        restored = self._restore()
        self._status = restored or GateStatus(GateState.PAUSED, GateState.UNKNOWN, 0, SYSTEM_OPERATOR,
                                              "started: waiting for an operator to resume", self.clock_ns())
        if restored is None:
            self._persist(self._status)

    @property
    def status(self) -> GateStatus:
        return self._status

    # --- operator commands ------------------------------------------------------------------------
    def command(self, command: int, operator_id: str, reason: str = "") -> Answer:
        operator_id, reason = operator_id.strip(), reason.strip()
        if not operator_id or len(operator_id) > MAX_OPERATOR_ID:
            return self._refuse(f"operator id must be 1-{MAX_OPERATOR_ID} characters")
        if len(reason) > MAX_REASON:
            return self._refuse(f"reason is longer than {MAX_REASON} characters")
        try:
            command = Command(command)
        except ValueError:
            return self._refuse(f"unknown command {command}; use PAUSE=1, RESUME=2 or APPROVE=3")
        state = self._status.state
        if command is Command.PAUSE:
            if state is GateState.PAUSED:
                return Answer(True, "already paused", self._status)
            return self._transition(GateState.PAUSED, operator_id, reason or "paused by operator")
        if command is Command.NONE:
            return self._refuse("no command given")
        if self.allowed_operators and operator_id not in self.allowed_operators:
            return self._refuse(f"operator '{operator_id}' may not {command.name.lower()}; ask an allowed operator")
        if command is Command.RESUME:
            if state is GateState.RUNNING:
                return Answer(True, "already running", self._status)
            if state is GateState.AWAITING_APPROVAL:
                return self._refuse(f"stopped for {', '.join(self._auto_pause) or 'an auto-pause class'}: "
                                    "needs APPROVE, not RESUME")
            if self._faults:
                return self._refuse(f"fault still active: {self._fault_text()}")
            if self._auto_pause:
                return self._refuse(f"{', '.join(self._auto_pause)} in the workspace")
            return self._transition(GateState.RUNNING, operator_id, reason or "resumed by operator")
        # APPROVE
        if state is not GateState.AWAITING_APPROVAL:
            return self._refuse(f"nothing to approve: the gate is {state.name}")
        if self._auto_pause:
            return self._refuse(f"{', '.join(self._auto_pause)} still in the workspace")
        if self._faults:
            return self._refuse(f"fault still active: {self._fault_text()}")
        return self._transition(GateState.RUNNING, operator_id, reason or "approved by operator")

    # --- what perception reports --------------------------------------------------------------------
    def observe(self, auto_pause: tuple[str, ...] | list[str], faults: dict[str, str]) -> GateStatus:
        """One frame set's safety-relevant findings: auto-pause classes seen, active faults."""
        self._auto_pause = tuple(auto_pause)
        self._faults = dict(faults)
        state = self._status.state
        if state is GateState.RUNNING and self._auto_pause:
            self._transition(GateState.AWAITING_APPROVAL, SYSTEM_OPERATOR, f"{', '.join(self._auto_pause)} entered")
        elif state is GateState.RUNNING and self._faults:
            self._transition(GateState.FAULT, SYSTEM_OPERATOR, self._fault_text())
        elif tuple(sorted(self._faults.values())) != self._status.active_faults and state is GateState.FAULT:
            self._status = GateStatus(**{**asdict(self._status), "active_faults": tuple(sorted(self._faults.values()))})
        return self._status

    # --- internals ----------------------------------------------------------------------------------
    def _fault_text(self) -> str:
        return "; ".join(f"{name}: {text}" for name, text in sorted(self._faults.items()))

    def _refuse(self, reason: str) -> Answer:
        return Answer(False, reason, self._status)

    def _transition(self, state: GateState, operator_id: str, reason: str) -> Answer:
        faults = tuple(sorted(self._faults.values())) if state is GateState.FAULT else ()
        if state is GateState.AWAITING_APPROVAL:
            faults = self._auto_pause
        status = GateStatus(state, self._status.state, self._status.transition_count + 1, operator_id, reason,
                            self.clock_ns(), faults)
        self._persist(status)
        self._status = status
        return Answer(True, reason, status)

    def _persist(self, status: GateStatus) -> None:
        record = {**asdict(status), "state": status.state.name, "previous_state": status.previous_state.name}
        if self.state_file is not None:
            atomic_write_bytes(self.state_file, json.dumps(record).encode())
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_file, "a", encoding="utf-8") as log:
                log.write(json.dumps(record) + "\n")
                log.flush()
                os.fsync(log.fileno())

    def _restore(self) -> GateStatus | None:
        if self.state_file is None or not self.state_file.exists():
            return None
        try:
            record = json.loads(self.state_file.read_text())
            saved = GateState[record["state"]]
            count = int(record["transition_count"])
        except (ValueError, KeyError, TypeError):
            saved, count = GateState.UNKNOWN, 0  # unreadable: start stopped, like a fresh gate
        restored = GateState.AWAITING_APPROVAL if saved is GateState.AWAITING_APPROVAL else GateState.PAUSED
        status = GateStatus(restored, saved, count + 1, SYSTEM_OPERATOR,
                            f"restarted (was {saved.name}): never resumes on its own", self.clock_ns())
        self._persist(status)
        return status
