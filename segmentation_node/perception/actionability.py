"""Roles and the one verdict the grasp planner obeys.

A frame set is actionable only if the gate is RUNNING (trusted and heard recently), every camera
is fresh and can see, the backend did not fail, an intent is in force, no auto-pause class or
intrusion into the pick zone is in view, and at least one target passes its score and stability
thresholds with no forbidden or intrusion region touching it (dilated) in any view. Targets that fail a check are demoted to
IGNORE, so in an actionable result every ROLE_TARGET instance is safe to pick.

The verdict is decided when processing starts and checked again when it is published
(`recheck`): a PAUSE, a new gate epoch, an intent change or a camera going bad in between makes
it not actionable.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable

import cv2
import numpy as np

from segmentation_node.contract import PICK_ZONE_INTRUSION_LABEL, GateState, Reason, Role, Source
from segmentation_node.masks import BoxedMask
from segmentation_node.perception.intent import ResolvedIntent
from segmentation_node.perception.ontology import Ontology


@dataclass(eq=False)
class Instance:
    """One instance in one view after tracking and role assignment."""

    camera: str
    track_id: int  # global id: the same for the object in every view; 0 = untracked region
    label: str
    attributes: tuple[str, ...]
    prompt: str
    source: Source
    score: float
    stability: float
    mask: BoxedMask
    role: Role = Role.UNKNOWN
    uncertain: tuple[str, ...] = ()  # attributes undecided: never a target when the intent names them


def assign_role(instance: Instance, ontology: Ontology, intent: ResolvedIntent | None) -> Role:
    if instance.source is Source.INTRUSION:
        return Role.FORBIDDEN
    spec = ontology.classes.get(instance.label)
    if spec is None:
        return Role.UNKNOWN
    if spec.role is Role.TARGET:
        wanted = intent is not None and intent.wants(instance.label, instance.attributes, instance.uncertain)
        return Role.TARGET if wanted else Role.IGNORE
    return spec.role


AUTO_PAUSE_MIN_SCORE = 0.5


@dataclass(frozen=True)
class ActionabilityConfig:
    clearance_px: int = 8            # targets are dilated this much before the forbidden check
    auto_pause_min_score: float = AUTO_PAUSE_MIN_SCORE


def auto_pause_labels(seen: Iterable[tuple[str, float]], ontology: Ontology,
                      min_score: float = AUTO_PAUSE_MIN_SCORE) -> list[str]:
    """The one auto-pause rule, for the verdict and for the gate that acts on it: the classes
    seen (label, score) that the ontology marks auto_pause, seen with at least `min_score`, and
    an intrusion into the pick zone, which no ontology can exempt."""
    return sorted({label for label, score in seen if score >= min_score and (
        label == PICK_ZONE_INTRUSION_LABEL or label in ontology.classes and ontology.classes[label].auto_pause)})


@dataclass(frozen=True)
class Conditions:
    """What a verdict depends on besides the images: taken when deciding and again at publish."""

    gate: GateState
    gate_epoch: int = 0                 # GateState.transition_count the gate was in
    gate_problem: str = ""              # why the gate cannot be trusted (lost, forged), "" if it can
    intent_sequence: int = 0
    camera_problems: dict[str, str] = field(default_factory=dict)  # not fresh, missing or bad input
    blind_cameras: dict[str, str] = field(default_factory=dict)    # images arrive but cannot see

    @classmethod
    def offline(cls) -> "Conditions":
        """Recordings and evaluation: no gate, judged as if it were RUNNING."""
        return cls(GateState.RUNNING)


def condition_reasons(conditions: Conditions) -> list[tuple[Reason, str]]:
    reasons = []
    if conditions.gate_problem:
        reasons.append((Reason.GATE_LOST, f"safety gate lost: {conditions.gate_problem}"))
    elif conditions.gate is not GateState.RUNNING:
        reasons.append((Reason.GATE_NOT_RUNNING, f"safety gate is {conditions.gate.name}"))
    if conditions.camera_problems:
        reasons.append((Reason.CAMERA_NOT_FRESH, _per_camera(conditions.camera_problems)))
    if conditions.blind_cameras:
        reasons.append((Reason.CAMERA_BLIND, _per_camera(conditions.blind_cameras)))
    return reasons


def _per_camera(problems: dict[str, str]) -> str:
    return "; ".join(f"{camera}: {problem}" for camera, problem in sorted(problems.items()))


@dataclass(frozen=True)
class Verdict:
    actionable: bool
    confidence: float
    reasons: tuple[tuple[Reason, str], ...] = ()
    auto_pause_labels: tuple[str, ...] = ()  # auto-pause classes seen: the gate must stop
    blocked_targets: dict[int, Reason] = field(default_factory=dict)  # global id -> why demoted


def decide(views: dict[str, list[Instance]], conditions: Conditions, ontology: Ontology,
           intent: ResolvedIntent | None, config: ActionabilityConfig = ActionabilityConfig(),
           model_error: str | None = None) -> Verdict:
    """Judge one frame set; demotes blocked targets to IGNORE in place."""
    reasons = condition_reasons(conditions)
    if model_error:
        reasons.append((Reason.MODEL_ERROR, f"segmentation failed: {model_error}"))
    if intent is None:
        reasons.append((Reason.NO_INTENT, "no operator intent is in force"))

    instances = [i for items in views.values() for i in items]
    auto_pause = auto_pause_labels(((i.label, i.score) for i in instances), ontology, config.auto_pause_min_score)
    if auto_pause:
        reasons.append((Reason.AUTO_PAUSE_CLASS, f"{', '.join(auto_pause)} in the workspace"))

    blocked = _blocked_targets(views, ontology, config)
    targets = {i.track_id for i in instances if i.role is Role.TARGET}
    for instance in instances:
        if instance.role is Role.TARGET and instance.track_id in blocked:
            instance.role = Role.IGNORE
    pickable = targets - set(blocked)
    if intent is not None and not targets:
        reasons.append((Reason.NO_TARGET, f"nothing matches the intent: {intent.explanation}"))
    elif targets and not pickable:
        for reason in sorted(set(blocked.values())):
            count = sum(1 for r in blocked.values() if r is reason)
            reasons.append((reason, f"{count} target(s) {_BLOCK_TEXT[reason]}"))
    scores = [i.score for i in instances if i.track_id in pickable]
    confidence = float(np.mean(scores)) if scores else 0.0
    return Verdict(not reasons, confidence, tuple(reasons), tuple(auto_pause), blocked)


def recheck(verdict: Verdict, decided: Conditions, now: Conditions) -> Verdict:
    """The verdict as it may be published now: an actionable one stays so only if the conditions
    still allow it and nothing it was decided under (gate epoch, intent) has changed since."""
    if not verdict.actionable:
        return verdict
    reasons = condition_reasons(now)
    if now.gate_epoch != decided.gate_epoch:
        reasons.append((Reason.DECISION_STALE, f"gate epoch changed from {decided.gate_epoch} to {now.gate_epoch} "
                                               "while this frame set was processed"))
    if now.intent_sequence != decided.intent_sequence:
        reasons.append((Reason.DECISION_STALE, f"intent changed from #{decided.intent_sequence} to "
                                               f"#{now.intent_sequence} while this frame set was processed"))
    return replace(verdict, actionable=False, reasons=tuple(reasons)) if reasons else verdict


_BLOCK_TEXT = {
    Reason.LOW_CONFIDENCE: "below their score threshold",
    Reason.UNSTABLE: "not yet temporally stable",
    Reason.FORBIDDEN_NEAR_TARGET: "touched by a forbidden or intrusion region",
}


def _blocked_targets(views: dict[str, list[Instance]], ontology: Ontology,
                     config: ActionabilityConfig) -> dict[int, Reason]:
    """Global ids of targets that may not be picked, with the first failed check: too close to
    a forbidden region in any view, else best score or stability over the views too low."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * config.clearance_px + 1,) * 2)
    near_forbidden, best_score, best_stability = set(), {}, {}
    for items in views.values():
        forbidden = [i.mask for i in items if i.role is Role.FORBIDDEN and i.mask.area]
        keep_out = _near(forbidden, kernel, config.clearance_px) if forbidden else None
        for instance in items:
            if instance.role is not Role.TARGET:
                continue
            best_score[instance.track_id] = max(best_score.get(instance.track_id, 0.0), instance.score)
            best_stability[instance.track_id] = max(best_stability.get(instance.track_id, 0.0), instance.stability)
            if keep_out is not None and instance.mask.within(keep_out).any():
                near_forbidden.add(instance.track_id)
    blocked = {}
    labels = {i.track_id: i.label for items in views.values() for i in items}
    for track_id, score in best_score.items():
        if track_id in near_forbidden:
            blocked[track_id] = Reason.FORBIDDEN_NEAR_TARGET
        elif score < ontology.classes[labels[track_id]].min_score:
            blocked[track_id] = Reason.LOW_CONFIDENCE
        elif best_stability[track_id] < ontology.min_stability:
            blocked[track_id] = Reason.UNSTABLE
    return blocked


def _near(masks: list[BoxedMask], kernel: np.ndarray, reach: int) -> np.ndarray:
    """View-sized: the masks' pixels and everything within `reach` of them. The kernel is
    symmetric, so a target within reach of the union touches the union grown by it: one
    dilation per view, and only around the masks."""
    canvas = np.zeros(masks[0].shape, np.uint8)
    for mask in masks:
        mask.paint(canvas, 1)
    region = canvas[max(min(m.top for m in masks) - reach, 0):max(m.box[0].stop for m in masks) + reach,
                    max(min(m.left for m in masks) - reach, 0):max(m.box[1].stop for m in masks) + reach]
    region[:] = cv2.dilate(region, kernel)
    return canvas.view(bool)
