"""One frame set through the whole ROS-free core: intrusion monitor (beside every backend) and
backend (detector on keyframes, propagation between) -> per-view tracks -> one id per object
across views -> roles -> verdict.

The segmentation node wraps this; tests and the evaluation CLI drive it directly.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from segmentation_node.contract import Role, Source
from segmentation_node.perception.actionability import (
    ActionabilityConfig, Conditions, Instance, Verdict, assign_role, decide)
from segmentation_node.perception.intent import ResolvedIntent, forbidden_prompts
from segmentation_node.perception.intrusion import IntrusionMonitor
from segmentation_node.perception.ontology import Ontology
from segmentation_node.perception.tracking import CrossViewIdentity, ViewGeometry, ViewTracker
from segmentation_node.perception.types import CameraFrame, Detection, SegmentationBackend

# Target-class detections below this share of their class threshold are noise, not "low confidence".
_NOISE_SHARE = 0.5
_SAME_OBJECT_IOU = 0.7


@dataclass
class KeyframeScheduler:
    """Full detection every `interval` frame sets, and at once after an intent change or when
    tracks were lost; the backend propagates its tracks in between."""

    interval: int = 5
    _since_keyframe: int | None = None

    def next(self, force: bool) -> bool:
        keyframe = force or self._since_keyframe is None or self._since_keyframe + 1 >= self.interval
        self._since_keyframe = 0 if keyframe else self._since_keyframe + 1
        return keyframe


@dataclass(frozen=True)
class FrameSetOutcome:
    views: dict[str, list[Instance]]
    verdict: Verdict
    inference_ms: float  # the intrusion monitor and the backend
    keyframe: bool


@dataclass
class PerceptionPipeline:
    backend: SegmentationBackend
    ontology: Ontology
    geometry: dict[str, ViewGeometry]
    actionability: ActionabilityConfig = ActionabilityConfig()
    scheduler: KeyframeScheduler = field(default_factory=KeyframeScheduler)
    intent: ResolvedIntent | None = None
    intrusion: IntrusionMonitor | None = None  # None: no commissioned cell, the model alone
    _trackers: dict[str, ViewTracker] = field(default_factory=dict)
    _identity: CrossViewIdentity | None = None
    _keyframe_due: bool = True
    _tracks_lost: bool = False

    def __post_init__(self):
        self._identity = CrossViewIdentity(self.geometry, plane_labels=frozenset(self.ontology.pickable))

    def set_intent(self, intent: ResolvedIntent) -> None:
        """Takes effect on the next frame set, which is a keyframe."""
        self.intent = intent
        self._keyframe_due = True

    def process(self, views: Sequence[CameraFrame], conditions: Conditions) -> FrameSetOutcome:
        keyframe = self.scheduler.next(self._keyframe_due or self._tracks_lost)
        self._keyframe_due = False
        prompts = self.intent.prompts if self.intent else forbidden_prompts(self.ontology)
        started = time.perf_counter()  # inference: the intrusion monitor and the backend
        intrusions, monitor_error = [[] for _ in views], None
        if self.intrusion is not None:
            try:
                observed = [self.intrusion.observe(view) for view in views]
                views = [replace(view, changed=changed) for view, (changed, _) in zip(views, observed)]
                intrusions = [found for _, found in observed]
            except Exception as error:  # noqa: BLE001 - a monitor that cannot see must fail safe, not crash
                monitor_error = f"intrusion monitor: {type(error).__name__}: {error}"
        try:
            detections = self.backend.process(views, prompts, keyframe)
            model_error = monitor_error
        except Exception as error:  # noqa: BLE001 - any backend failure must fail safe, not crash
            detections = [[] for _ in views]
            model_error = f"{type(error).__name__}: {error}"
            self.backend.reset()
        inference_ms = (time.perf_counter() - started) * 1000.0
        # The monitor's regions join whatever the model found: no model output removes them.
        tracked = {view.camera: self._track(view.camera, self._keep(found + intruding))
                   for view, found, intruding in zip(views, detections, intrusions)}
        _share_attributes(tracked)
        instances = {camera: self._roles(found) for camera, found in tracked.items()}
        self._tracks_lost = any(track.age > 0 for tracker in self._trackers.values() for track in tracker.tracks)
        verdict = decide(instances, conditions, self.ontology, self.intent, self.actionability, model_error)
        return FrameSetOutcome(instances, verdict, inference_ms, keyframe)

    def set_geometry(self, geometry: dict[str, ViewGeometry]) -> None:
        """Calibration learned while running (camera_info, /tf_static): objects placed from the
        next frame set on; ids already given are kept."""
        self.geometry = geometry
        self._identity.geometry = geometry

    def swap_backend(self, backend: SegmentationBackend) -> SegmentationBackend:
        """Serve the next frame set with another model; tracks and ids carry over (the trackers
        match masks, whoever made them), the new model starts with a keyframe. Returns the old one."""
        old, self.backend = self.backend, backend
        self._keyframe_due = True
        return old

    def reset(self) -> None:
        """New scene: forget every track and id."""
        self.backend.reset()
        self._trackers.clear()
        self._identity = CrossViewIdentity(self.geometry, plane_labels=frozenset(self.ontology.pickable))
        self._keyframe_due = True

    def _keep(self, detections: list[Detection]) -> list[Detection]:
        """Drop noise, then merge one object found by several prompts of its class ("metal
        disc", "defective metal disc"): best score, union of attributes."""
        kept: list[Detection] = []
        for detection in detections:
            spec = self.ontology.classes.get(detection.label)
            if spec is not None:
                floor = spec.min_score if spec.role is Role.FORBIDDEN else _NOISE_SHARE * spec.min_score
                if detection.score < floor:
                    continue
            twin = next((k for k in kept if k.label == detection.label and k.source is detection.source
                         and k.mask.iou(detection.mask) >= _SAME_OBJECT_IOU), None)
            if twin is None:
                kept.append(detection)
                continue
            twin.attributes = tuple(dict.fromkeys(twin.attributes + detection.attributes))
            twin.uncertain = tuple(dict.fromkeys(twin.uncertain + detection.uncertain))
            if detection.score > twin.score:
                twin.mask, twin.score, twin.prompt = detection.mask, detection.score, detection.prompt
        return kept

    def _track(self, camera: str, detections: list[Detection]) -> list[Instance]:
        tracked = [d for d in detections if d.source is not Source.INTRUSION]
        tracker = self._trackers.setdefault(camera, ViewTracker())
        tracks = tracker.update(tracked)
        global_ids = self._identity.assign(camera, tracks)
        instances = []
        for detection, track, global_id in zip(tracked, tracks, global_ids):
            instances.append(Instance(camera, global_id, detection.label, detection.attributes, detection.prompt,
                                      detection.source, detection.score, track.stability, detection.mask,
                                      uncertain=detection.uncertain))
        for detection in detections:
            if detection.source is Source.INTRUSION:
                instances.append(Instance(camera, 0, detection.label, (), "", detection.source, detection.score,
                                          1.0, detection.mask))
        return instances

    def _roles(self, instances: list[Instance]) -> list[Instance]:
        for instance in instances:
            instance.role = assign_role(instance, self.ontology, self.intent)
        return _disjoint_targets(instances)


def _share_attributes(views: dict[str, list[Instance]]) -> None:
    """One object, one set of attributes: what any view decided about an object (a scratch seen
    from above but hidden from the side), or could not decide, holds for it in every view."""
    decided, undecided = {}, {}
    for instance in (i for found in views.values() for i in found if i.track_id):
        decided[instance.track_id] = decided.get(instance.track_id, ()) + instance.attributes
        undecided[instance.track_id] = undecided.get(instance.track_id, ()) + instance.uncertain
    for instance in (i for found in views.values() for i in found if i.track_id):
        instance.attributes = tuple(dict.fromkeys(decided[instance.track_id]))
        instance.uncertain = tuple(a for a in dict.fromkeys(undecided[instance.track_id]) if a not in instance.attributes)


def _disjoint_targets(instances: list[Instance]) -> list[Instance]:
    """A view's targets share no pixel, so every target's mask is exactly its value in the view's
    label image. Where two overlap, the smaller mask keeps the pixels (then the lower track id):
    an overlap is mostly a mask spilling over a neighbour that lies on or against it, and on the
    synthetic cell this rule scores better than score order (README, workcell_eval). A target
    left with no pixel is dropped. Forbidden regions keep their full extent."""
    targets = sorted((i for i in instances if i.role is Role.TARGET),
                     key=lambda i: (i.mask.area, i.track_id))
    if len(targets) < 2:
        return instances
    claimed = np.zeros(targets[0].mask.shape, bool)
    for target in targets:
        target.mask = target.mask.without(claimed)
        target.mask.paint(claimed, True)
    return [i for i in instances if i.role is not Role.TARGET or i.mask.area]
