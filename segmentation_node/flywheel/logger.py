"""The data flywheel as the segmentation node runs it (ROS-free).

`observe` is called by the node's worker once per frame set and never blocks: it picks
pseudo-labels, feeds the hard-case ring buffer and queues the writes. A writer thread encodes
and writes shards (crash-safe, see shards.py) and enforces the disk budget. When the write queue
is full the newest work is dropped and counted: inference must never wait for a disk.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from segmentation_node.contract import GateState, Source
from segmentation_node.flywheel.hard_cases import (AUTO_PAUSE, LOW_CONFIDENCE, OPERATOR_PAUSE, HardCaseClip,
                                                   HardCasePolicy, HardCaseRecorder)
from segmentation_node.flywheel.pseudo_labels import PseudoLabelFilter, PseudoLabelPolicy
from segmentation_node.flywheel.shards import (LoggedFrameSet, LoggedInstance, LoggedView, ShardWriter,
                                               enforce_retention, recover)
from segmentation_node.perception.actionability import Instance
from segmentation_node.perception.ontology import Ontology
from segmentation_node.perception.pipeline import FrameSetOutcome
from segmentation_node.perception.types import CameraFrame


@dataclass(frozen=True)
class FlywheelPolicy:
    pseudo_labels: PseudoLabelPolicy = PseudoLabelPolicy()
    hard_cases: HardCasePolicy = HardCasePolicy()
    frame_sets_per_shard: int = 50
    max_bytes: int = 2 * 1024**3
    queue_size: int = 8


@dataclass
class FlywheelStats:
    frame_sets_seen: int = 0
    pseudo_label_frame_sets: int = 0
    hard_case_clips: int = 0
    acknowledged: int = 0           # frame sets durably written
    dropped: int = 0                # write queue full
    write_errors: int = 0
    shards_sealed: int = 0
    shards_deleted: int = 0
    recovered: int = 0
    last_error: str = ""
    triggers: dict[str, int] = field(default_factory=dict)


class FlywheelLogger:
    def __init__(self, root: Path | str, ontology: Ontology, run: str, policy: FlywheelPolicy = FlywheelPolicy(),
                 meta: dict | None = None):
        self.root, self.ontology, self.policy = Path(root), ontology, policy
        self.stats = FlywheelStats()
        self.stats.recovered = len(recover(self.root))  # shards a crash left open become usable
        categories = sorted(ontology.classes)
        self._pseudo = ShardWriter(self.root, "pseudo_label", categories, run, policy.frame_sets_per_shard, meta)
        self._hard = ShardWriter(self.root, "hard_case", categories, run, 10**9, meta)
        self._filter = PseudoLabelFilter(policy.pseudo_labels)
        self._recorder = HardCaseRecorder(policy.hard_cases, self._queue_clip)
        self._lock = threading.Lock()
        self._previous_gate = GateState.UNKNOWN
        self._was_auto_pausing = False
        self._jobs: queue.Queue = queue.Queue(maxsize=policy.queue_size)
        self._thread = threading.Thread(target=self._write_loop, name="flywheel-writer", daemon=True)
        self._thread.start()

    # --- called by the node -----------------------------------------------------------------------
    def observe(self, sequence: int, frames: Sequence[CameraFrame], outcome: FrameSetOutcome, gate: GateState,
                meta: dict | None = None) -> None:
        meta = dict(meta or {}, sequence=sequence, actionable=outcome.verdict.actionable)
        images = {frame.camera: frame for frame in frames}
        with self._lock:
            self.stats.frame_sets_seen += 1
            kept = self._filter.select({c: i for c, i in outcome.views.items() if c in images})
            if kept:
                self.stats.pseudo_label_frame_sets += 1
                frame_set = _logged(sequence, images, kept, dict(meta, source="pseudo_label"))
                self._submit(lambda: self._write_pseudo_labels(frame_set))
            everything = _logged(sequence, images, outcome.views, dict(meta, source="hard_case"))
            self._recorder.observe(everything, self._triggers(outcome, gate))
            self._previous_gate = gate

    def report(self, kind: str, detail: str = "") -> bool:
        """An external event (mis-pick, operator reject): the frames around now become a hard case."""
        with self._lock:
            fired = self._recorder.trigger(kind, detail)
            if fired:
                self.stats.triggers[kind] = self.stats.triggers.get(kind, 0) + 1
            return fired

    def close(self, timeout_s: float = 30.0) -> None:
        """Write what is queued, hand over a clip still collecting, seal the open shards."""
        with self._lock:
            self._recorder.flush()
        self._jobs.put(None)
        self._thread.join(timeout=timeout_s)

    # --- internals ---------------------------------------------------------------------------------
    def _triggers(self, outcome: FrameSetOutcome, gate: GateState) -> list[tuple[str, str]]:
        triggers = []
        uncertain = [i for instances in outcome.views.values() for i in instances
                     if i.source is Source.MODEL and i.label in self.ontology.classes
                     and i.score < self.ontology.classes[i.label].min_score]
        if uncertain:
            worst = min(uncertain, key=lambda i: i.score)
            triggers.append((LOW_CONFIDENCE, f"{worst.label} at {worst.score:.2f} in {worst.camera}"))
        auto_pausing = bool(outcome.verdict.auto_pause_labels)
        if auto_pausing and not self._was_auto_pausing:
            triggers.append((AUTO_PAUSE, ", ".join(outcome.verdict.auto_pause_labels)))
        self._was_auto_pausing = auto_pausing
        if self._previous_gate is GateState.RUNNING and gate is GateState.PAUSED:
            triggers.append((OPERATOR_PAUSE, "an operator stopped a running cell"))
        for kind, _ in triggers:
            self.stats.triggers[kind] = self.stats.triggers.get(kind, 0) + 1
        return triggers

    def _queue_clip(self, clip: HardCaseClip) -> None:
        self.stats.hard_case_clips += 1
        triggers = list(clip.triggers)

        def write_clip():
            for frame_set in clip.frame_sets:
                self._hard.add(LoggedFrameSet(frame_set.sequence, frame_set.views,
                                              dict(frame_set.meta, triggers=triggers)))
                self.stats.acknowledged += 1
            self._count_sealed(self._hard.seal())
        self._submit(write_clip)

    def _submit(self, write: Callable[[], None]) -> None:
        try:
            self._jobs.put_nowait(write)
        except queue.Full:
            self.stats.dropped += 1

    def _write_pseudo_labels(self, frame_set: LoggedFrameSet) -> None:
        sealed = self._pseudo.add(frame_set)
        self.stats.acknowledged += 1
        self._count_sealed(sealed)

    def _count_sealed(self, sealed: Path | None) -> None:
        self.stats.shards_sealed += sealed is not None

    def _write_loop(self) -> None:
        """The only thread that touches the disk."""
        while True:
            write = self._jobs.get()
            if write is None:
                write = self._seal_pseudo_labels
            try:
                write()
                self.stats.shards_deleted += len(enforce_retention(self.root, self.policy.max_bytes))
            except Exception as error:  # noqa: BLE001 - a full disk must not stop perception
                self.stats.write_errors += 1
                self.stats.last_error = f"{type(error).__name__}: {error}"
            if write == self._seal_pseudo_labels:
                return

    def _seal_pseudo_labels(self) -> None:
        self._count_sealed(self._pseudo.seal())


def _logged(sequence: int, images: dict[str, CameraFrame], views: dict[str, list[Instance]], meta: dict
            ) -> LoggedFrameSet:
    return LoggedFrameSet(sequence, tuple(
        LoggedView(camera, images[camera].stamp_ns, images[camera].frame_id, images[camera].image,
                   tuple(LoggedInstance(i.track_id, i.label, i.role.name.lower(), i.attributes, i.score, i.mask)
                         for i in instances))
        for camera, instances in views.items() if camera in images), meta)
