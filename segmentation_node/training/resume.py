"""Resumable stages: every `every` steps rank 0 saves what the rest of the stage depends on
(the stage's trainable weights, optimizer state, step, early-stopping state, best weights so
far, the report so far), atomically; `--resume` and a torchrun restart after a killed worker
continue from it. Samples and dropout depend only on (seed, stage, step, sample / rank)
(distributed.py), so no sampler or RNG state is needed: a resumed run ends with the weights of
an uninterrupted one. A stage that finished is saved once more, whole, and skipped on resume.
On several machines the resume folder must be on a filesystem every rank reads."""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from segmentation_node.atomic_io import atomic_write_bytes

FORMAT = 1
log = logging.getLogger(__name__)


class ResumeError(ValueError):
    """The saved state is not this run's (other arguments) or unreadable; says which."""


@dataclass(frozen=True)
class StageResume:
    path: Path
    every: int          # steps between saves; 0: only when the stage ends
    writer: bool        # rank 0
    fingerprint: dict   # the arguments that define the run: resuming another run is refused
    continue_saved: bool = True  # False: a fresh run (saves, never loads)

    def load(self) -> dict | None:
        if not self.continue_saved or not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as error:  # noqa: BLE001 - a torn or foreign file: say so, never guess
            raise ResumeError(f"cannot read {self.path}: {type(error).__name__}: {error}") from None
        if state.get("format") != FORMAT or state.get("fingerprint") != self.fingerprint:
            theirs = state.get("fingerprint") or {}
            differs = sorted(k for k in set(theirs) | set(self.fingerprint) if theirs.get(k) != self.fingerprint.get(k))
            raise ResumeError(f"{self.path} was saved by another run (differs in: {', '.join(differs) or 'format'}); "
                              "remove it or run without --resume")
        return state

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def save(self, state: dict, step: int) -> None:
        """`state` as it stands after `step`."""
        if not self.writer:
            return
        buffer = io.BytesIO()
        torch.save({**state, "format": FORMAT, "fingerprint": self.fingerprint}, buffer)
        atomic_write_bytes(self.path, buffer.getvalue())
        # Where a restart would continue from: the operator's (and the restart test's) cue.
        log.info("saved %s after step %d", self.path, step)
