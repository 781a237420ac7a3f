"""workcell_eval: run the perception core on a synthetic clip and score it against the exact
ground truth: forbidden-region recall, target mask IoU / boundary F / AP, temporal stability
and cross-view id consistency."""
from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from segmentation_node.contract import Role
from segmentation_node.perception.actionability import Conditions
from segmentation_node.perception.classical import ColorClassifier
from segmentation_node.perception.intent import resolve_intent
from segmentation_node.masks import BoxedMask, greedy_match
from segmentation_node.perception.metrics import CocoMaskAP, TemporalStability, boundary_f_score
from segmentation_node.perception.ontology import load_ontology
from segmentation_node.perception.pipeline import FrameSetOutcome, PerceptionPipeline
from segmentation_node.perception.types import CameraFrame
from segmentation_node.synthetic.classical_setup import commission, train_classifier
from segmentation_node.synthetic.render import ViewRender, render_frame_set
from segmentation_node.synthetic.scene import Clip, ClipConfig, FrameState, generate_clip

FORBIDDEN_TRUTH = ("hand", "tool", "fixture")
HALF_VISIBLE = 0.5
MATCH_IOU = 0.1  # a guess overlapping a true instance this much is its match (then scored by IoU)
PRECISION_INTENTS = ("defective items only", "pick part_a", "good blocks")


@dataclass
class EvaluationReport:
    frames: int
    views: int
    forbidden_recall: dict[str, float]  # per true class, pixels over the whole clip
    target_iou: float                   # mean best IoU of parts more than half visible
    target_iou_at_least_08: float       # share of those parts with IoU >= 0.8
    targets: int
    boundary_f: float
    mask_ap: dict[str, float]
    id_switches: int
    flicker: int
    cross_view_splits: int              # object-frames where one part got different ids in two views
    actionable_frame_sets: int
    targets_marked: int    # TARGET instances in actionable frame sets
    targets_intended: int  # of those, the ones whose true object the intent wants

    def rows(self) -> list[tuple[str, str]]:
        rows = [(f"forbidden recall: {label}", f"{value:.3f}") for label, value in self.forbidden_recall.items()]
        rows += [
            ("target IoU, parts > half visible (mean)", f"{self.target_iou:.3f}"),
            ("  share of those parts with IoU >= 0.8", f"{self.target_iou_at_least_08:.3f}"),
            ("  parts evaluated (object-views)", str(self.targets)),
            ("target boundary F (2 px)", f"{self.boundary_f:.3f}"),
            ("mask AP@[.5:.95] / AP50 (pycocotools)", f"{self.mask_ap['AP']:.3f} / {self.mask_ap['AP50']:.3f}"),
            ("id switches", str(self.id_switches)),
            ("flicker (missed frames inside a track)", str(self.flicker)),
            ("cross-view id splits", str(self.cross_view_splits)),
            ("actionable frame sets", f"{self.actionable_frame_sets} / {self.frames}"),
        ]
        return rows

    @property
    def target_precision(self) -> float | None:
        return self.targets_intended / self.targets_marked if self.targets_marked else None

    def precision_row(self) -> str:
        shown = "n/a" if self.target_precision is None else f"{self.target_precision:.3f}"
        return f"{shown} ({self.targets_marked} targets)"


def evaluate_clip(clip: Clip, pipeline: PerceptionPipeline,
                  observer: Callable[[FrameState, list[ViewRender], FrameSetOutcome], None] | None = None
                  ) -> EvaluationReport:
    """Run the pipeline over the clip and score it; `observer` sees every frame set's outcome."""
    pickable = pipeline.ontology.pickable
    covered, total = defaultdict(int), defaultdict(int)
    ious, boundary, ap = [], [], CocoMaskAP(list(pickable))
    stability = TemporalStability()
    splits = actionable = marked = right = 0
    for frame in clip.frames:
        renders = render_frame_set(clip, frame.index)
        outcome = pipeline.process([CameraFrame(r.camera.name, r.stamp_ns, r.image, r.camera.frame_id)
                                    for r in renders], Conditions.offline())
        actionable += outcome.verdict.actionable
        if observer is not None:
            observer(frame, renders, outcome)
        ids_across_views = defaultdict(set)
        for render in renders:
            predicted = outcome.views[render.camera.name]
            forbidden = np.zeros(render.instance_map.shape, bool)
            for instance in predicted:
                if instance.role is Role.FORBIDDEN:
                    instance.mask.paint(forbidden, True)
            for truth in render.instances:
                if truth.label in FORBIDDEN_TRUTH:
                    mask = render.mask(truth.track_id)
                    covered[truth.label] += int((mask & forbidden).sum())
                    total[truth.label] += int(mask.sum())
            true_masks = {t.track_id: BoxedMask.from_array(render.mask(t.track_id))
                          for t in render.instances if t.label in pickable}
            ap.add_image([(t.label, true_masks[t.track_id]) for t in render.instances if t.label in pickable],
                         [(p.label, p.mask, p.score) for p in predicted if p.label in pickable])
            for label in pickable:
                truths = [t for t in render.instances if t.label == label and t.visible_fraction > HALF_VISIBLE]
                guesses = [p for p in predicted if p.label == label]
                matches = {j: (i, iou) for i, j, iou in greedy_match([g.mask for g in guesses],
                                                                    [true_masks[t.track_id] for t in truths], MATCH_IOU)}
                for j, truth in enumerate(truths):
                    i, iou = matches.get(j, (None, 0.0))
                    ious.append(iou)
                    key = (render.camera.name, truth.track_id)
                    stability.observe(key, guesses[i].track_id if i is not None and iou >= 0.5 else None)
                    if i is not None:
                        boundary.append(boundary_f_score(guesses[i].mask.to_array(), render.mask(truth.track_id)))
                        if iou >= 0.5:
                            ids_across_views[truth.track_id].add(guesses[i].track_id)
            if outcome.verdict.actionable:
                for instance in predicted:
                    if instance.role is Role.TARGET:
                        marked += 1
                        right += _intended(pipeline, render, instance)
        splits += sum(len(ids) > 1 for ids in ids_across_views.values())
    return EvaluationReport(
        len(clip.frames), len(clip.cameras),
        {label: covered[label] / total[label] for label in FORBIDDEN_TRUTH if total[label]},
        float(np.mean(ious)) if ious else 0.0,
        float(np.mean(np.array(ious) >= 0.8)) if ious else 0.0, len(ious),
        float(np.mean(boundary)) if boundary else 0.0, ap.evaluate(),
        stability.id_switches, stability.flicker, splits, actionable, marked, right)


def _intended(pipeline: PerceptionPipeline, render: ViewRender, instance) -> bool:
    """Whether the true object under most of the instance's pixels is one the intent wants."""
    ids, counts = np.unique(render.instance_map[instance.mask.box][instance.mask.crop], return_counts=True)
    truth = next((t for t in render.instances if t.track_id == ids[np.argmax(counts)]), None)
    return truth is not None and pipeline.intent.wants(truth.label, truth.attributes)


def classical_pipeline(clip: Clip, intent_text: str = "everything", classifier: ColorClassifier | None = None):
    """The classical CPU backend commissioned for this clip's cell, ready to run; the colour
    classifier is trained on other seeds unless one is given."""
    ontology = load_ontology()
    classifier = classifier or train_classifier(replace(clip.config, frames=20))
    commissioned = commission(clip, classifier)
    pipeline = PerceptionPipeline(commissioned.classical_backend(), ontology, commissioned.geometry(),
                                  intrusion=commissioned.intrusion_monitor())
    pipeline.set_intent(resolve_intent(intent_text, ontology))
    return pipeline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workcell_eval", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT")
    parser.add_argument("--frames", type=int, default=30)
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    base = ClipConfig(seed=args.seed, views=args.views, width=width, height=height, frames=args.frames)
    clips = {"hand and picks, parts singulated (no stacking)": replace(base, stacking=False),
             "no occlusion events (no hand, no stacking)": replace(base, hand=False, stacking=False),
             "everything (hand, picks, parts resting on each other)": base}
    print(f"backend: classical (colour/shape classifier + change detection), seed {args.seed}, "
          f"{args.views} views {width}x{height}, {args.frames} frame sets each")
    classifier = train_classifier(replace(base, frames=20))
    for title, config in clips.items():
        clip = generate_clip(config)
        report = evaluate_clip(clip, classical_pipeline(clip, classifier=classifier))
        print(f"\n### {title}\n\n| metric | value |\n|---|---|")
        for name, value in report.rows():
            print(f"| {name} | {value} |")
    clip = generate_clip(base)
    print("\n### target precision under an intent (last clip): of the targets in actionable frame sets, "
          "the share the ground truth says the intent wants\n\n| intent | precision | actionable frame sets |\n|---|---|---|")
    for text in PRECISION_INTENTS:
        report = evaluate_clip(clip, classical_pipeline(clip, text, classifier=classifier))
        print(f"| {text} | {report.precision_row()} | {report.actionable_frame_sets} / {report.frames} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
