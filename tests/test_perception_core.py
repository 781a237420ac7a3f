"""Perception core without ROS: tracking, cross-view identity, metrics, actionability, pipeline."""
import numpy as np
import pytest

from segmentation_node.contract import GateState, Reason, Role, Source
from segmentation_node.masks import BoxedMask, greedy_match
from segmentation_node.perception.actionability import Conditions, Instance, decide
from segmentation_node.perception.intent import resolve_intent
from segmentation_node.perception.metrics import (
    CocoMaskAP, TemporalStability, boundary_f_score, pixel_recall)
from segmentation_node.perception.ontology import load_ontology
from segmentation_node.perception.tracking import CrossViewIdentity, Track, ViewGeometry, ViewTracker
from segmentation_node.perception.types import Detection
from segmentation_node.synthetic.render import render_frame_set
from segmentation_node.synthetic.scene import ClipConfig, generate_clip


@pytest.fixture(scope="module")
def ontology():
    return load_ontology()


def disc(center, radius=8, shape=(64, 96)):
    rows, cols = np.ogrid[:shape[0], :shape[1]]
    return (rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= radius ** 2


def boxed_disc(center, radius=8):
    return BoxedMask.from_array(disc(center, radius))


# --- tracking ------------------------------------------------------------------------------------
def test_view_tracker_keeps_ids_while_objects_move_and_forgets_lost_ones():
    tracker = ViewTracker(max_age=2)
    first = tracker.update([Detection(boxed_disc((20, 20)), 0.9, "part_a"), Detection(boxed_disc((40, 70)), 0.9, "part_b")])
    ids = [t.track_id for t in first]
    assert len(set(ids)) == 2 and all(t.stability == 0.0 for t in first)
    moved = tracker.update([Detection(boxed_disc((41, 72)), 0.9, "part_b"), Detection(boxed_disc((21, 22)), 0.9, "part_a")])
    assert [t.track_id for t in moved] == ids[::-1]
    assert all(t.stability > 0.3 for t in moved)
    # A different label at the same place is a different object.
    assert tracker.update([Detection(boxed_disc((21, 22)), 0.9, "part_b")])[0].track_id not in ids
    for _ in range(3):
        tracker.update([])
    assert tracker.tracks == []


def test_view_tracker_memory_is_bounded():
    tracker = ViewTracker(max_tracks=5)
    for step in range(20):
        tracker.update([Detection(boxed_disc((10 + step, 10 + 4 * step), radius=2), 0.9, "part_a")] * 3)
    assert len(tracker.tracks) <= 5


def test_one_object_gets_one_id_in_every_view():
    clip = generate_clip(ClipConfig(seed=4, views=3, width=320, height=240, frames=1, hand=False, stacking=False))
    renders = render_frame_set(clip, 0)
    geometry = {c.name: ViewGeometry(c.intrinsics, c.world_from_camera) for c in clip.cameras}
    identity = CrossViewIdentity(geometry, plane_labels=frozenset({"part_a", "part_b"}))
    global_of = {}
    for render in renders:
        parts = [t for t in render.instances if t.label.startswith("part") and t.visible_fraction > 0.8]
        tracks = [Track(10_000 + t.track_id, t.label, BoxedMask.from_array(render.mask(t.track_id))) for t in parts]
        for truth, global_id in zip(parts, identity.assign(render.camera.name, tracks)):
            global_of.setdefault(truth.track_id, set()).add(global_id)
    assert len(global_of) >= 5
    assert all(len(ids) == 1 for ids in global_of.values()), global_of
    assert len({next(iter(ids)) for ids in global_of.values()}) == len(global_of)


# --- metrics -------------------------------------------------------------------------------------
def test_boundary_f_and_recall():
    truth = disc((30, 40), 12)
    assert boundary_f_score(truth, truth) == 1.0
    assert boundary_f_score(disc((30, 41), 12), truth) > 0.9
    assert boundary_f_score(disc((30, 60), 12), truth) < 0.3
    assert pixel_recall(truth | disc((5, 5)), truth) == 1.0
    assert pixel_recall(np.zeros_like(truth), truth) == 0.0
    assert pixel_recall(truth, np.zeros_like(truth)) is None


def test_matching_and_coco_ap():
    truths = [boxed_disc((20, 20)), boxed_disc((40, 70))]
    predictions = [boxed_disc((40, 71)), boxed_disc((20, 20)), boxed_disc((5, 90), 3)]
    assert {(i, j) for i, j, _ in greedy_match(predictions, truths, 0.1)} == {(0, 1), (1, 0)}
    perfect = CocoMaskAP(["part_a"])
    perfect.add_image([("part_a", t) for t in truths], [("part_a", t, 0.9) for t in truths])
    assert perfect.evaluate()["AP"] == pytest.approx(1.0)
    poor = CocoMaskAP(["part_a"])
    poor.add_image([("part_a", t) for t in truths], [("part_a", boxed_disc((5, 90), 3), 0.9)])
    assert poor.evaluate()["AP"] == pytest.approx(0.0)


def test_temporal_stability_counts_switches_and_flicker():
    stability = TemporalStability()
    for predicted in (1, 1, None, 1, 2, 2):
        stability.observe(("cam", 10), predicted)
    for predicted in (None, 5, 5):
        stability.observe(("cam", 11), predicted)
    assert stability.id_switches == 1
    assert stability.flicker == 1


# --- actionability -------------------------------------------------------------------------------
def instance(track_id, label, role, mask, score=0.9, stability=0.9, source=Source.MODEL, camera="cam_top"):
    return Instance(camera, track_id, label, (), "", source, score, stability, mask, role)


def test_actionable_when_everything_holds(ontology):
    intent = resolve_intent("pick everything", ontology)
    views = {"cam_top": [instance(1, "part_a", Role.TARGET, boxed_disc((20, 20))),
                         instance(2, "tool", Role.FORBIDDEN, boxed_disc((50, 85), 5))]}
    verdict = decide(views, Conditions(GateState.RUNNING), ontology, intent)
    assert verdict.actionable and verdict.reasons == () and verdict.confidence == pytest.approx(0.9)


@pytest.mark.parametrize("case, reason", [
    ("paused", Reason.GATE_NOT_RUNNING),
    ("stale camera", Reason.CAMERA_NOT_FRESH),
    ("model error", Reason.MODEL_ERROR),
    ("no intent", Reason.NO_INTENT),
    ("hand", Reason.AUTO_PAUSE_CLASS),
    ("no target", Reason.NO_TARGET),
    ("low score", Reason.LOW_CONFIDENCE),
    ("unstable", Reason.UNSTABLE),
    ("intrusion touches", Reason.FORBIDDEN_NEAR_TARGET),
])
def test_each_unsafe_condition_blocks_with_its_reason(ontology, case, reason):
    intent = None if case == "no intent" else resolve_intent("pick everything", ontology)
    target = instance(1, "part_a", Role.TARGET, boxed_disc((20, 20)), score=0.2 if case == "low score" else 0.9,
                      stability=0.1 if case == "unstable" else 0.9)
    views = {"cam_top": [] if case == "no target" else [target]}
    if case == "hand":
        views["cam_top"].append(instance(5, "hand", Role.FORBIDDEN, boxed_disc((55, 90), 4)))
    if case == "intrusion touches":  # another view sees something unknown right next to the part
        views["cam_left"] = [instance(1, "part_a", Role.TARGET, boxed_disc((20, 20)), camera="cam_left"),
                             instance(0, "unknown_object", Role.FORBIDDEN, boxed_disc((20, 31), 4),
                                      source=Source.INTRUSION, camera="cam_left")]
    conditions = Conditions(GateState.PAUSED if case == "paused" else GateState.RUNNING,
                            camera_problems={"cam_right": "no image for 1.2 s"} if case == "stale camera" else {})
    verdict = decide(views, conditions, ontology, intent,
                     model_error="RuntimeError: boom" if case == "model error" else None)
    assert not verdict.actionable
    assert reason in [code for code, _ in verdict.reasons]
    assert all(text for _, text in verdict.reasons)
    if reason in (Reason.LOW_CONFIDENCE, Reason.UNSTABLE, Reason.FORBIDDEN_NEAR_TARGET):
        assert all(i.role is Role.IGNORE for items in views.values() for i in items if i.label == "part_a")
    if case == "hand":
        assert verdict.auto_pause_labels == ("hand",)


def test_blocked_target_is_demoted_but_others_stay_pickable(ontology):
    intent = resolve_intent("pick everything", ontology)
    near = instance(1, "part_a", Role.TARGET, boxed_disc((20, 20)))
    free = instance(2, "part_b", Role.TARGET, boxed_disc((20, 70)))
    tool = instance(3, "tool", Role.FORBIDDEN, boxed_disc((20, 33), 4))
    verdict = decide({"cam_top": [near, free, tool]}, Conditions(GateState.RUNNING), ontology, intent)
    assert verdict.actionable
    assert near.role is Role.IGNORE and free.role is Role.TARGET
    assert verdict.blocked_targets == {1: Reason.FORBIDDEN_NEAR_TARGET}


class ScriptedBackend:
    """Backend double: every view gets the same detections, as a detector would answer."""
    name, model_version = "scripted", "scripted-1"

    def __init__(self, detections):
        self.detections = detections

    def process(self, views, prompts, keyframe):
        return [list(self.detections) for _ in views]

    def reset(self):
        pass


def one_frame_set(ontology, detections, intent):
    """One 64x96 view through the whole pipeline, offline conditions."""
    from segmentation_node.perception.pipeline import PerceptionPipeline
    from segmentation_node.perception.types import CameraFrame

    pipeline = PerceptionPipeline(ScriptedBackend(detections), ontology, geometry={})
    pipeline.set_intent(resolve_intent(intent, ontology))
    return pipeline.process([CameraFrame("cam_top", 0, np.zeros((64, 96, 3), np.uint8))], Conditions.offline())


def test_pipeline_merges_one_object_found_by_two_prompts(ontology):
    detections = [Detection(boxed_disc((20, 20)), 0.7, "part_a", "metal disc"),
                  Detection(boxed_disc((20, 21)), 0.9, "part_a", "defective metal disc", attributes=("defective",))]
    outcome = one_frame_set(ontology, detections, "defective items only")
    (merged,) = outcome.views["cam_top"]
    assert merged.score == 0.9 and merged.attributes == ("defective",)
    # A target under "defective items only", held back only because its track is one frame old.
    assert outcome.verdict.blocked_targets == {merged.track_id: Reason.UNSTABLE}


def test_overlapping_targets_are_made_disjoint_and_match_the_label_image_exactly(ontology):
    """Issue 14: for every target, its wire RLE decodes to exactly the pixels of its value in
    target_labels. Where targets overlap, the smaller mask keeps the pixels; a forbidden region
    keeps its full extent (its overlap with a target is what blocks that target)."""
    from segmentation_node.masks import label_image, mask_from_counts

    large, middle, small = disc((30, 40), 12), disc((30, 52), 10), disc((30, 62), 8)
    hand = disc((30, 46), 6)
    outcome = one_frame_set(ontology, [
        Detection(BoxedMask.from_array(large), 0.9, "part_a", "metal disc"),
        Detection(BoxedMask.from_array(middle), 0.6, "part_b", "plastic cap"),
        Detection(BoxedMask.from_array(small), 0.8, "part_a", "metal disc"),
        Detection(BoxedMask.from_array(hand), 0.95, "hand", "hand")], "pick everything")
    instances = outcome.views["cam_top"]
    # Target-class instances; decide() may have demoted some to IGNORE (one frame old, the hand).
    targets = [i for i in instances if i.label in ("part_a", "part_b")]
    assert len(targets) == 3 and (large & middle).any() and (middle & small).any()
    by_score = {round(t.score, 2): t.mask.to_array() for t in targets}
    assert np.array_equal(by_score[0.8], small)  # the smallest keeps all of its pixels
    assert np.array_equal(by_score[0.6], middle & ~small)
    assert np.array_equal(by_score[0.9], large & ~middle)
    labels = label_image((64, 96), [t.mask for t in targets])
    for value, target in enumerate(targets, start=1):
        decoded = mask_from_counts(target.mask.rle_counts(), 64, 96)
        assert np.array_equal(decoded, labels == value), f"target {value}: RLE and label image differ"
    (forbidden,) = [i for i in instances if i.role is Role.FORBIDDEN]
    assert np.array_equal(forbidden.mask.to_array(), hand)


def test_an_undecided_attribute_is_never_a_target_of_an_intent_about_it(ontology):
    from segmentation_node.perception.actionability import assign_role

    undecided = instance(1, "part_a", Role.UNKNOWN, boxed_disc((20, 20)))
    undecided.uncertain = ("defective",)
    for text, role in [("defective items only", Role.IGNORE), ("good discs", Role.IGNORE),
                       ("pick everything", Role.TARGET), ("good discs", Role.IGNORE)]:
        assert assign_role(undecided, ontology, resolve_intent(text, ontology)) is role, text


def test_what_one_view_decides_about_an_object_holds_in_every_view():
    from segmentation_node.perception.pipeline import _share_attributes

    top = instance(3, "part_b", Role.UNKNOWN, boxed_disc((20, 20)))
    top.attributes = ("defective",)
    side = instance(3, "part_b", Role.UNKNOWN, boxed_disc((20, 20)), camera="cam_left")  # scratch hidden
    other = instance(4, "part_b", Role.UNKNOWN, boxed_disc((40, 60)), camera="cam_left")
    other.uncertain = ("scratched",)
    _share_attributes({"cam_top": [top], "cam_left": [side, other]})
    assert side.attributes == ("defective",) and other.attributes == () and other.uncertain == ("scratched",)


def test_one_auto_pause_rule_for_the_verdict_and_the_gate(ontology):
    """The operator node stops the gate with the same function the verdict uses: classes marked
    auto_pause, seen with at least the minimum score (a faint 'hand' does not stop the cell), and
    an intrusion into the pick zone, which the ontology does not list and cannot exempt."""
    from segmentation_node.contract import INTRUSION_LABEL, PICK_ZONE_INTRUSION_LABEL
    from segmentation_node.perception.actionability import AUTO_PAUSE_MIN_SCORE, auto_pause_labels

    seen = [("hand", AUTO_PAUSE_MIN_SCORE - 0.1), ("tool", 0.99), ("part_a", 0.9), ("unicorn", 1.0),
            (INTRUSION_LABEL, 1.0)]
    assert auto_pause_labels(seen, ontology) == []
    assert auto_pause_labels(seen + [("hand", AUTO_PAUSE_MIN_SCORE)], ontology) == ["hand"]
    assert PICK_ZONE_INTRUSION_LABEL not in ontology.classes
    assert auto_pause_labels(seen + [(PICK_ZONE_INTRUSION_LABEL, 1.0)], ontology) == [PICK_ZONE_INTRUSION_LABEL]
    views = {"cam_top": [instance(5, "hand", Role.FORBIDDEN, boxed_disc((20, 20)), score=AUTO_PAUSE_MIN_SCORE - 0.1)]}
    assert decide(views, Conditions(GateState.RUNNING), ontology, resolve_intent("pick everything", ontology)
                  ).auto_pause_labels == ()
