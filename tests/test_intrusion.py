"""The intrusion monitor beside every backend: a hand the model does not name is still a
forbidden region that stops the cell for approval once it reaches into the pick zone, and a
failing model does not remove it (ROS-free)."""
from dataclasses import replace

import numpy as np
import pytest

from segmentation_node.contract import INTRUSION_LABEL, PICK_ZONE_INTRUSION_LABEL, Command, GateState, Reason, Role, Source
from segmentation_node.gate import SafetyGate
from segmentation_node.perception.actionability import Conditions
from segmentation_node.perception.intent import resolve_intent
from segmentation_node.perception.ontology import load_ontology
from segmentation_node.perception.pipeline import PerceptionPipeline
from segmentation_node.perception.types import CameraFrame
from segmentation_node.sam3_backend.backend import Sam3Backend
from segmentation_node.sam3_backend.builder import build_small_sam3
from segmentation_node.synthetic.classical_setup import commission, train_classifier
from segmentation_node.synthetic.render import render_frame_set
from segmentation_node.synthetic.scene import ClipConfig, generate_clip

CELL = ClipConfig(seed=3, views=2, width=160, height=120, frames=20)


@pytest.fixture(scope="module")
def cell():
    clip = generate_clip(CELL)
    commissioned = commission(clip, train_classifier(replace(CELL, frames=4), seeds=(101,), frames_per_clip=2))
    hand_frames = [f.index for f in clip.frames if any(t.label == "hand" for r in render_frame_set(clip, f.index)
                                                       for t in r.instances)]
    assert hand_frames, "the clip has a hand"
    return clip, commissioned, hand_frames


class FailingBackend:
    name, model_version = "failing", "failing-1"

    def process(self, views, prompts, keyframe):
        raise RuntimeError("model crashed")

    def reset(self):
        pass


def frames(clip, index):
    return [CameraFrame(r.camera.name, r.stamp_ns, r.image, r.camera.frame_id) for r in render_frame_set(clip, index)]


def hand_coverage(clip, index, outcome) -> float:
    """Share of the hand's pixels, over the views, inside intrusion regions."""
    covered = total = 0
    for render in render_frame_set(clip, index):
        hand = np.zeros(render.instance_map.shape, bool)
        for truth in render.instances:
            if truth.label == "hand":
                hand |= render.mask(truth.track_id)
        intruded = np.zeros_like(hand)
        for instance in outcome.views[render.camera.name]:
            if instance.source is Source.INTRUSION:
                assert instance.role is Role.FORBIDDEN
                instance.mask.paint(intruded, True)
        covered += np.count_nonzero(hand & intruded)
        total += np.count_nonzero(hand)
    return covered / total


@pytest.mark.parametrize("backend_kind", ["sam3_small", "failing"])
def test_a_hand_the_model_does_not_name_is_forbidden_by_the_intrusion_monitor(cell, backend_kind):
    clip, commissioned, hand_frames = cell
    ontology = load_ontology()
    backend = Sam3Backend(build_small_sam3(image_size=112, seed=0), score_threshold=0.5) \
        if backend_kind == "sam3_small" else FailingBackend()
    pipeline = PerceptionPipeline(backend, ontology, commissioned.geometry(), intrusion=commissioned.intrusion_monitor())
    pipeline.set_intent(resolve_intent("pick everything", ontology))
    deepest = max(hand_frames, key=lambda i: sum(np.count_nonzero(r.instance_map == t.track_id)
                                                 for r in render_frame_set(clip, i) for t in r.instances
                                                 if t.label == "hand"))
    outcome = pipeline.process(frames(clip, deepest), Conditions.offline())
    assert not any(i.label == "hand" for v in outcome.views.values() for i in v), "the model does not name it"
    assert hand_coverage(clip, deepest, outcome) > 0.9
    assert not outcome.verdict.actionable
    # The intrusion channel alone stops a running gate for approval.
    assert outcome.verdict.auto_pause_labels == (PICK_ZONE_INTRUSION_LABEL,)
    assert Reason.AUTO_PAUSE_CLASS in {code for code, _ in outcome.verdict.reasons}
    gate = SafetyGate(allowed_operators=["alice"])
    assert gate.command(Command.RESUME, "alice").accepted
    status = gate.observe(outcome.verdict.auto_pause_labels, {}, gate.status.transition_count)
    assert status.state is GateState.AWAITING_APPROVAL and status.active_faults == (PICK_ZONE_INTRUSION_LABEL,)
    if backend_kind == "failing":
        assert Reason.MODEL_ERROR in {code for code, _ in outcome.verdict.reasons}
    without = PerceptionPipeline(backend, ontology, commissioned.geometry())
    without.set_intent(resolve_intent("pick everything", ontology))
    alone = without.process(frames(clip, deepest), Conditions.offline())
    assert not any(i.source is Source.INTRUSION for v in alone.views.values() for i in v), "the monitor is the source"


def test_only_an_intrusion_into_the_pick_zone_stops_the_cell(cell):
    """The clip's screwdriver lies beside the bin, not in the empty cell: a keep-out region in
    every frame, never a stop (else the cell could never run). Before the hand comes, nothing
    pauses; while it reaches into the bin, the pick-zone intrusion does."""
    clip, commissioned, hand_frames = cell
    ontology = load_ontology()
    pipeline = PerceptionPipeline(FailingBackend(), ontology, commissioned.geometry(),
                                  intrusion=commissioned.intrusion_monitor())
    paused = {}
    for index in range(len(clip.frames)):
        outcome = pipeline.process(frames(clip, index), Conditions.offline())
        labels = {i.label for v in outcome.views.values() for i in v if i.source is Source.INTRUSION}
        assert INTRUSION_LABEL in labels, f"frame {index}: the tool beside the bin is a keep-out region"
        paused[index] = bool(outcome.verdict.auto_pause_labels)
    assert not any(paused[i] for i in range(min(hand_frames))), "nothing foreign in the bin before the hand"
    assert any(paused[i] for i in hand_frames)


def test_a_camera_the_monitor_does_not_know_fails_safe(cell):
    clip, commissioned, _ = cell
    ontology = load_ontology()
    pipeline = PerceptionPipeline(FailingBackend(), ontology, {}, intrusion=commissioned.intrusion_monitor())
    stranger = [replace(view, camera="cam_unknown") for view in frames(clip, 0)]
    outcome = pipeline.process(stranger, Conditions.offline())
    assert not outcome.verdict.actionable
    assert any("intrusion monitor" in text or "model crashed" in text for _, text in outcome.verdict.reasons)
