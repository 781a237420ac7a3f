"""Durable record of the safety gate: an append-only JSON-lines log and a state file (ROS-free).

One transition is one durable step: the log line is appended and fsynced first, then the state
file is replaced atomically. A kill -9 between the two leaves the log one transition ahead, and
`load()` takes the newer of the two, so an acknowledged transition is never lost. Anything
unreadable (a torn last log line, a corrupt or foreign state file, a directory in its place) is
reported in one line and moved aside; start-up never raises because of what is on disk.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from segmentation_node.atomic_io import atomic_write_bytes
from segmentation_node.contract import GateState

MAX_TRANSITION_COUNT = 2**32 - 2  # GateState.transition_count is uint32; +1 at the next start
_MAX_STATE_BYTES = 1 << 20       # a real state file is a few hundred bytes
_LOG_TAIL_BYTES = 1 << 16        # the newest transition is in the last lines


class RecordError(ValueError):
    """A gate record that cannot be trusted; the message says why."""


@dataclass(frozen=True)
class Loaded:
    record: dict | None  # the newest valid transition record, or None (fresh gate)
    problem: str = ""    # what was wrong on disk, "" if nothing


def validate(record) -> dict:
    """The fields a restart relies on, checked; RecordError otherwise."""
    if not isinstance(record, dict):
        raise RecordError("not a JSON object")
    state = record.get("state")
    if state not in GateState.__members__:
        raise RecordError(f"unknown state {str(state)[:40]!r}")
    count = record.get("transition_count")
    if type(count) is not int or not 0 <= count <= MAX_TRANSITION_COUNT:
        raise RecordError(f"transition_count {str(count)[:40]} is not an integer in 0..{MAX_TRANSITION_COUNT}")
    faults = record.get("faults", {})
    if not isinstance(faults, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in faults.items()):
        raise RecordError("faults is not a mapping of text to text")
    auto_pause = record.get("auto_pause", [])
    if not isinstance(auto_pause, list) or not all(isinstance(label, str) for label in auto_pause):
        raise RecordError("auto_pause is not a list of labels")
    return record


class GateJournal:
    def __init__(self, state_file: Path | None, log_file: Path | None):
        self.state_file, self.log_file = state_file, log_file

    def append(self, record: dict) -> None:
        """Make one record durable: log line first, then the state file. Raises OSError."""
        line = (json.dumps(record) + "\n").encode()
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(descriptor, line)
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        if self.state_file is not None and record.get("event", "transition") == "transition":
            atomic_write_bytes(self.state_file, line)

    def load(self) -> Loaded:
        """The newest trustworthy transition; never raises."""
        problems = []
        self._remove_leftover_temporaries(problems)
        from_state = self._load_state_file(problems)
        from_log = self._last_logged_transition()
        newest = max((r for r in (from_state, from_log) if r is not None),
                     key=lambda r: r["transition_count"], default=None)
        return Loaded(newest, "; ".join(problems))

    # --- internals ----------------------------------------------------------------------------------
    def _remove_leftover_temporaries(self, problems: list[str]) -> None:
        """atomic_write_bytes' temporaries of a write a crash interrupted."""
        if self.state_file is None or not self.state_file.parent.is_dir():
            return
        for leftover in self.state_file.parent.glob(f".{self.state_file.name}.*.tmp"):
            try:
                leftover.unlink()
            except OSError as error:
                problems.append(f"cannot remove leftover {leftover.name}: {error.strerror or error}")

    def _load_state_file(self, problems: list[str]) -> dict | None:
        path = self.state_file
        if path is None or not (path.exists() or path.is_symlink()):
            return None
        try:
            if not path.is_file():
                raise RecordError("not a regular file")
            if path.stat().st_size > _MAX_STATE_BYTES:
                raise RecordError(f"larger than {_MAX_STATE_BYTES} bytes")
            return validate(json.loads(path.read_bytes()))
        except (OSError, ValueError, RecursionError) as error:  # ValueError covers JSON and RecordError
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)[:120]
            problems.append(f"state file unreadable: {reason}, {self._move_aside(path)}")
            return None

    @staticmethod
    def _move_aside(path: Path) -> str:
        target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
        try:
            os.replace(path, target)
        except OSError as error:
            return f"could not move it aside ({error.strerror or error})"
        return f"moved to {target.name}"

    def _last_logged_transition(self) -> dict | None:
        """The last valid transition line of the log; torn or foreign lines are skipped."""
        if self.log_file is None or not self.log_file.is_file():
            return None
        try:
            with open(self.log_file, "rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
                lines = log.read().splitlines()
        except OSError:
            return None
        for line in reversed(lines):
            try:
                record = json.loads(line)
                if isinstance(record, dict) and record.get("event", "transition") == "transition":
                    return validate(record)
            except (ValueError, RecursionError):
                continue
        return None
