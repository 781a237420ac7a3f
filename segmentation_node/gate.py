"""The safety gate (ROS-free): states, operator commands, automatic stops, persistence.

- PAUSE is never refused and never depends on the disk: any operator id and reason are taken
  (made printable), the state changes in memory at once, and the caller publishes it before
  `flush()` makes it durable. A failing disk is reported (FAULT "persistence"), never raised.
- RESUME and APPROVE (the only ways to RUNNING) need an allowed operator, normalised (Unicode
  NFKC, trimmed, no control characters); an empty allowlist means nobody. They are made durable
  before they take effect: a gate that cannot record a resume does not resume.
- A hand (any auto-pause class) while RUNNING -> AWAITING_APPROVAL; only APPROVE leaves it, and
  only once a frame set decided under that very stop (its gate epoch) no longer shows the class.
- Stale camera, bad input or model error while RUNNING -> FAULT; RESUME leaves it once cleared.
- Observations decided under an older gate epoch may add faults or auto-pause classes, never
  clear them: a result still in flight from before a stop cannot approve it.
- Restart: the auto-pause cause and faults are persisted with the state, RUNNING and FAULT come
  back PAUSED, AWAITING_APPROVAL stays; an unreadable state file starts PAUSED and says why.
"""
from __future__ import annotations

import time
import unicodedata
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

from segmentation_node.contract import Command, GateState
from segmentation_node.gate_journal import MAX_TRANSITION_COUNT, GateJournal

SYSTEM_OPERATOR = "system"
ANONYMOUS_OPERATOR = "anonymous"
MAX_OPERATOR_ID = 64
MAX_REASON = 256
PERSISTENCE_FAULT = "persistence"


def printable(text: str, limit: int) -> str:
    """One log line's worth of `text`: control characters escaped, at most `limit` characters."""
    text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(text).strip())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def normalise_operator_id(raw: str) -> str:
    """The id an allowlist is compared with; ValueError says why a raw id is not acceptable."""
    operator_id = unicodedata.normalize("NFKC", str(raw)).strip()
    if not operator_id or len(operator_id) > MAX_OPERATOR_ID:
        raise ValueError(f"operator id must be 1-{MAX_OPERATOR_ID} characters")
    if any(unicodedata.category(c).startswith("C") for c in operator_id):
        raise ValueError("operator id contains control characters")
    return operator_id


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


class SafetyGate:
    def __init__(self, journal: GateJournal | None = None, allowed_operators: Iterable[str] = (),
                 clock_ns: Callable[[], int] = time.time_ns):
        self.allowed_operators = frozenset(normalise_operator_id(o) for o in allowed_operators)
        self._journal = journal or GateJournal(None, None)
        self._clock_ns = clock_ns
        self._unsaved: list[dict] = []
        self._persistence_error = ""
        self._faults: dict[str, str] = {}
        self._auto_pause: tuple[str, ...] = ()
        self._observed_epoch: int | None = None  # gate epoch of the newest observation
        self._status, self.start_problem = self._restore()
        self._unsaved.append({"event": "start", "allowed_operators": sorted(self.allowed_operators),
                              "stamp_ns": self._clock_ns()})
        self.flush()

    @property
    def status(self) -> GateStatus:
        return self._status

    @property
    def persistence_error(self) -> str:
        return self._persistence_error

    # --- operator commands ------------------------------------------------------------------------
    def command(self, command: int, operator_id: str, reason: str = "") -> Answer:
        reason = printable(reason, MAX_REASON)
        try:
            command = Command(command)
        except ValueError:
            return self._refuse(f"unknown command {printable(command, 20)}; use PAUSE=1, RESUME=2 or APPROVE=3")
        if command is Command.PAUSE:
            if self._status.state is GateState.PAUSED:
                return Answer(True, "already paused", self._status)
            who = printable(operator_id, MAX_OPERATOR_ID) or ANONYMOUS_OPERATOR
            return self._stop(GateState.PAUSED, who, reason or "paused by operator")
        if command is Command.NONE:
            return self._refuse("no command given")
        try:
            who = normalise_operator_id(operator_id)
        except ValueError as error:
            return self._refuse(str(error))
        if not self.allowed_operators:
            return self._refuse("no operator may resume or approve: allowed_operators is empty "
                                "(set it in the configuration and restart)")
        if who not in self.allowed_operators:
            return self._refuse(f"operator '{printable(who, MAX_OPERATOR_ID)}' may not {command.name.lower()}; "
                                "ask an allowed operator")
        state = self._status.state
        if command is Command.RESUME:
            if state is GateState.RUNNING:
                return Answer(True, "already running", self._status)
            if state is GateState.AWAITING_APPROVAL:
                return self._refuse(f"stopped for {', '.join(self._auto_pause) or 'an auto-pause class'}: "
                                    "needs APPROVE, not RESUME")
            return self._blocked() or self._go(who, reason or "resumed by operator")
        if state is not GateState.AWAITING_APPROVAL:
            return self._refuse(f"nothing to approve: the gate is {state.name}")
        if self._observed_epoch != self._status.transition_count:
            return self._refuse(f"no frame set decided since this stop (gate epoch {self._status.transition_count}) "
                                "yet: wait for the cameras to show the cell")
        return self._blocked(still=True) or self._go(who, reason or "approved by operator")

    # --- what perception reports --------------------------------------------------------------------
    def observe(self, auto_pause: Iterable[str], faults: dict[str, str], epoch: int) -> GateStatus:
        """One frame set's safety findings (auto-pause classes, faults by name), decided under gate
        epoch `epoch`. Only an observation of the current epoch can clear what an earlier one saw."""
        if epoch == self._status.transition_count:
            self._auto_pause, self._faults, self._observed_epoch = tuple(sorted(set(auto_pause))), dict(faults), epoch
        else:
            self._auto_pause = tuple(sorted(set(self._auto_pause) | set(auto_pause)))
            self._faults = {**self._faults, **faults}
        state = self._status.state
        if state is GateState.RUNNING and self._auto_pause:
            return self._stop(GateState.AWAITING_APPROVAL, SYSTEM_OPERATOR,
                              f"{', '.join(self._auto_pause)} entered").status
        if state is GateState.RUNNING and self._faults:
            return self._stop(GateState.FAULT, SYSTEM_OPERATOR, self._fault_text()).status
        if state is not GateState.RUNNING and self._active_faults(state) != self._status.active_faults:
            self._status = GateStatus(**{**asdict(self._status), "active_faults": self._active_faults(state)})
        return self._status

    # --- persistence --------------------------------------------------------------------------------
    def flush(self) -> bool:
        """Make pending records durable; on failure stop the gate (FAULT) and keep them for the next
        try. Never raises. Returns whether the status changed."""
        before = self._status
        try:
            self._write_unsaved()
        except OSError as error:
            self._persistence_failed(error)
        else:
            if self._persistence_error:
                self._persistence_error = ""
                self._status = GateStatus(**{**asdict(self._status),
                                             "active_faults": self._active_faults(self._status.state)})
        return self._status is not before

    # --- internals ----------------------------------------------------------------------------------
    def _fault_text(self) -> str:
        return "; ".join(f"{name}: {text}" for name, text in sorted(self._faults.items()))

    def _active_faults(self, state: GateState) -> tuple[str, ...]:
        """What holds the gate stopped: auto-pause classes when awaiting approval, else faults
        (one entry per fault name, so a fault's changing detail is not a new message)."""
        if state is GateState.AWAITING_APPROVAL:
            return self._auto_pause
        names = sorted(self._faults) + ([PERSISTENCE_FAULT] if self._persistence_error else [])
        return tuple(names) if state is not GateState.RUNNING else ()

    def _persistence_failed(self, error: OSError) -> None:
        """Stop the gate (its FAULT record waits in the queue: the next flush tests the disk again)."""
        where = f" ({error.filename})" if getattr(error, "filename", None) else ""
        self._persistence_error = f"cannot persist the gate state: {error.strerror or error}{where}"
        if self._status.state is not GateState.FAULT:
            self._stop(GateState.FAULT, SYSTEM_OPERATOR, self._persistence_error)
        else:
            self._status = GateStatus(**{**asdict(self._status), "active_faults": self._active_faults(GateState.FAULT)})

    def _blocked(self, still: bool = False) -> Answer | None:
        if self._persistence_error:
            return self._refuse(self._persistence_error)
        if self._faults:
            return self._refuse(f"fault still active: {self._fault_text()}")
        if self._auto_pause:
            return self._refuse(f"{', '.join(self._auto_pause)} {'still ' if still else ''}in the workspace")
        return None

    def _refuse(self, reason: str) -> Answer:
        return Answer(False, reason, self._status)

    def _next(self, state: GateState, operator_id: str, reason: str) -> GateStatus:
        count = min(self._status.transition_count + 1, MAX_TRANSITION_COUNT + 1)
        return GateStatus(state, self._status.state, count, operator_id, reason, self._clock_ns(),
                          self._active_faults(state))

    def _stop(self, state: GateState, operator_id: str, reason: str) -> Answer:
        """Any move away from RUNNING: in memory now, durable at the next flush()."""
        self._status = self._next(state, operator_id, reason)
        self._unsaved.append(self._record(self._status))
        return Answer(True, reason, self._status)

    def _go(self, operator_id: str, reason: str) -> Answer:
        """RUNNING only once it is durable."""
        status = self._next(GateState.RUNNING, operator_id, reason)
        self._unsaved.append(self._record(status))
        try:
            self._write_unsaved()
        except OSError as error:
            self._unsaved.pop()
            self._persistence_failed(error)
            return self._refuse(f"{self._persistence_error}; not resumed")
        self._status = status
        return Answer(True, reason, status)

    def _write_unsaved(self) -> None:
        while self._unsaved:
            self._journal.append(self._unsaved[0])
            self._unsaved.pop(0)

    def _record(self, status: GateStatus) -> dict:
        return {"event": "transition", **asdict(status), "state": status.state.name,
                "previous_state": status.previous_state.name, "faults": dict(self._faults),
                "auto_pause": list(self._auto_pause)}

    def _restore(self) -> tuple[GateStatus, str]:
        loaded = self._journal.load()
        record = loaded.record
        problem = loaded.problem
        if record is None:
            reason = f"started after {problem}" if problem else "started: waiting for an operator to resume"
            status = GateStatus(GateState.PAUSED, GateState.UNKNOWN, 0, SYSTEM_OPERATOR, reason, self._clock_ns())
            self._unsaved.append(self._record(status))
            return status, problem
        saved = GateState[record["state"]]
        self._faults = dict(record.get("faults", {}))
        self._auto_pause = tuple(record.get("auto_pause", []))
        restored = GateState.AWAITING_APPROVAL if saved is GateState.AWAITING_APPROVAL else GateState.PAUSED
        reason = f"restarted (was {saved.name}): never resumes on its own" + (f"; {problem}" if problem else "")
        self._status = GateStatus(saved, GateState.UNKNOWN, record["transition_count"], SYSTEM_OPERATOR, "", 0)
        status = self._next(restored, SYSTEM_OPERATOR, reason)
        self._unsaved.append(self._record(status))
        return status, problem
