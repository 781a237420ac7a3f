"""workcell_release_gate: may a candidate model replace the deployed one?

Both models run the same fixed suite of synthetic scenes (hand, tool, fixtures, picks) through
the full perception pipeline, and the same prompt cases (plain, attribute, negated, synonym and
adversarial phrasing). Hard gates, any failure refuses the candidate:
- forbidden-region recall per class: at least the absolute floor, and no worse than deployed
  by more than `recall_max_drop` (safety first: a model that misses hands never ships);
- temporal stability: id switches + flicker per 100 tracked object-views no worse than deployed
  by more than `stability_max_increase`;
- promptability: in every prompt case the target mask IoU no worse than deployed by more than
  `prompt_max_drop` (a fine-tune must not forget how to follow intents);
- target precision under an intent: of the TARGET instances in actionable frame sets, the
  share the ground truth says the intent wants, at least `precision_floor` for every precision
  intent ("defective items only", "pick part_a", "good blocks"): a model that would have the
  robot pick a good part when asked for defective ones never ships. With no target marked at
  all the precision is 1 (nothing wrong was offered; promptability catches the idle model).
Quality gates: target mask AP, IoU and boundary F no worse than deployed by more than
`quality_max_drop`. Writes a markdown + JSON report and records the verdict in the registry.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
from tqdm import tqdm

from segmentation_node.contract import Role
from segmentation_node.perception.actionability import Conditions
from segmentation_node.perception.intent import resolve_intent
from segmentation_node.perception.ontology import Ontology, load_ontology
from segmentation_node.perception.pipeline import PerceptionPipeline
from segmentation_node.masks import BoxedMask
from segmentation_node.perception.tracking import ViewGeometry
from segmentation_node.perception.types import CameraFrame, SegmentationBackend
from segmentation_node.registry import ACCEPTED, REJECTED, ModelRegistry, RegistryError, load_registered_model
from segmentation_node.synthetic.evaluation import FORBIDDEN_TRUTH, PRECISION_INTENTS, evaluate_clip
from segmentation_node.synthetic.render import render_frame_set
from segmentation_node.synthetic.scene import Clip, ClipConfig, generate_clip

# Fixed phrasing cases: the same texts every release, so a regression in following them shows.
PROMPT_CASES = ("pick everything", "defective items only", "good blocks", "everything except discs",
                "take the good discs out of the bin", "DAMAGED washers!!", "reject scratched; pick blocks")


@dataclass(frozen=True)
class GateSuite:
    scenes: tuple[ClipConfig, ...]
    prompts: tuple[str, ...] = PROMPT_CASES
    prompt_frames: int = 3  # frame sets per prompt case (a keyframe and tracking)
    precision_intents: tuple[str, ...] = PRECISION_INTENTS


SUITES = {
    # CI-sized: seconds per model with the small SAM3.
    "quick": GateSuite((ClipConfig(seed=11, views=2, width=128, height=96, frames=4, parts=5, picks=1),),
                       PROMPT_CASES[1:4], prompt_frames=2),
    "standard": GateSuite(tuple(ClipConfig(seed=seed, views=3, width=640, height=480, frames=30, stacking=stacking)
                                for seed, stacking in ((11, False), (12, True), (13, True)))),
}


@dataclass(frozen=True)
class GateThresholds:
    recall_floor: float = 0.95
    recall_max_drop: float = 0.01
    stability_max_increase: float = 1.0   # id switches + flicker per 100 tracked object-views
    prompt_max_drop: float = 0.05
    quality_max_drop: float = 0.03
    precision_floor: float = 0.95


@dataclass
class ModelScores:
    forbidden_recall: dict[str, float]
    target_iou: float
    boundary_f: float
    mask_ap: float
    instability_per_100: float
    prompt_iou: dict[str, float]
    target_precision: dict[str, float]  # per precision intent, over the suite's clips
    targets_marked: dict[str, int]       # the TARGET instances it was measured on


@dataclass
class Check:
    gate: str        # "hard" or "quality"
    metric: str
    deployed: float
    candidate: float
    limit: str
    passed: bool


@dataclass
class GateReport:
    candidate: str
    deployed: str
    suite: str
    thresholds: GateThresholds
    scores: dict[str, ModelScores]
    checks: list[Check] = field(default_factory=list)
    candidate_sha256: str = ""  # the weights judged: the registry promotes only those

    @property
    def verdict(self) -> str:
        return ACCEPTED if all(check.passed for check in self.checks) else REJECTED

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]

    def to_json(self) -> dict:
        return {"candidate": self.candidate, "candidate_sha256": self.candidate_sha256,
                "deployed": self.deployed, "suite": self.suite,
                "verdict": self.verdict, "thresholds": asdict(self.thresholds),
                "scores": {name: asdict(score) for name, score in self.scores.items()},
                "checks": [asdict(check) for check in self.checks]}

    def to_markdown(self) -> str:
        lines = [f"# Release gate: {self.candidate} vs deployed {self.deployed}", "",
                 f"**Verdict: {self.verdict.upper()}** (suite `{self.suite}`)", ""]
        if self.failures:
            lines += ["Refused because:", *[f"- {c.metric}: {c.candidate:.3f} (deployed {c.deployed:.3f}, "
                                            f"limit {c.limit})" for c in self.failures], ""]
        lines += ["| gate | metric | deployed | candidate | limit | pass |", "|---|---|---|---|---|---|"]
        lines += [f"| {c.gate} | {c.metric} | {c.deployed:.3f} | {c.candidate:.3f} | {c.limit} | "
                  f"{'yes' if c.passed else '**NO**'} |" for c in self.checks]
        return "\n".join(lines) + "\n"


def evaluate_model(make_backend: Callable[[], SegmentationBackend], suite: GateSuite, ontology: Ontology,
                   label: str = "") -> ModelScores:
    backend = make_backend()
    recalls, ious, boundary, ap, unstable, object_views = {c: [] for c in FORBIDDEN_TRUTH}, [], [], [], 0, 0
    prompt_iou: dict[str, list[float]] = {text: [] for text in suite.prompts}
    marked, intended = dict.fromkeys(suite.precision_intents, 0), dict.fromkeys(suite.precision_intents, 0)
    clips = [generate_clip(config) for config in suite.scenes]
    steps = len(clips) * (1 + len(suite.prompts) + len(suite.precision_intents))
    with tqdm(total=steps, desc=f"gate suite {label}".strip(), unit="run", leave=False) as progress:
        for clip in clips:
            report = evaluate_clip(clip, _pipeline(backend, clip, ontology, "pick everything"))
            for name, value in report.forbidden_recall.items():
                recalls[name].append(value)
            ious.append(report.target_iou)
            boundary.append(report.boundary_f)
            ap.append(report.mask_ap["AP"])
            unstable += report.id_switches + report.flicker
            object_views += report.targets
            progress.update()
            for text in suite.prompts:
                prompt_iou[text].append(_prompt_case(backend, clip, ontology, text, suite.prompt_frames))
                progress.update()
            for text in suite.precision_intents:
                report = evaluate_clip(clip, _pipeline(backend, clip, ontology, text))
                marked[text] += report.targets_marked
                intended[text] += report.targets_intended
                progress.update()
    return ModelScores({name: float(np.mean(v)) for name, v in recalls.items() if v}, float(np.mean(ious)),
                       float(np.mean(boundary)), float(np.mean(ap)), 100.0 * unstable / max(object_views, 1),
                       {text: float(np.mean(v)) for text, v in prompt_iou.items()},
                       {text: intended[text] / marked[text] if marked[text] else 1.0 for text in marked}, marked)


def _pipeline(backend: SegmentationBackend, clip: Clip, ontology: Ontology, intent: str) -> PerceptionPipeline:
    backend.reset()
    geometry = {c.name: ViewGeometry(c.intrinsics, c.world_from_camera) for c in clip.cameras}
    pipeline = PerceptionPipeline(backend, ontology, geometry)
    pipeline.set_intent(resolve_intent(intent, ontology))
    return pipeline


def _prompt_case(backend, clip: Clip, ontology: Ontology, text: str, frames: int) -> float:
    """Mean IoU between what the model marks as targets and what the intent asks for."""
    pipeline = _pipeline(backend, clip, ontology, text)
    intent = pipeline.intent
    ious = []
    for frame in clip.frames[:frames]:
        renders = render_frame_set(clip, frame.index)
        outcome = pipeline.process([CameraFrame(r.camera.name, r.stamp_ns, r.image, r.camera.frame_id)
                                    for r in renders], Conditions.offline())
        for render in renders:
            wanted = np.zeros(render.instance_map.shape, bool)
            for truth in render.instances:
                if intent.wants(truth.label, truth.attributes):
                    wanted |= render.mask(truth.track_id)
            marked = np.zeros_like(wanted)
            for instance in outcome.views[render.camera.name]:
                if instance.role is Role.TARGET:
                    instance.mask.paint(marked, True)
            ious.append(1.0 if not wanted.any() and not marked.any()
                        else BoxedMask.from_array(marked).iou(BoxedMask.from_array(wanted)))
    return float(np.mean(ious))


def compare(candidate: ModelScores, deployed: ModelScores, thresholds: GateThresholds) -> list[Check]:
    t = thresholds
    checks = []
    for name, value in deployed.forbidden_recall.items():
        got = candidate.forbidden_recall.get(name, 0.0)
        limit = max(t.recall_floor, value - t.recall_max_drop)
        checks.append(Check("hard", f"forbidden recall: {name}", value, got, f">= {limit:.3f}", got >= limit))
    limit = deployed.instability_per_100 + t.stability_max_increase
    checks.append(Check("hard", "id switches + flicker per 100 object-views", deployed.instability_per_100,
                        candidate.instability_per_100, f"<= {limit:.3f}", candidate.instability_per_100 <= limit))
    for text, value in deployed.prompt_iou.items():
        got = candidate.prompt_iou.get(text, 0.0)
        checks.append(Check("hard", f"promptability: '{text}' target IoU", value, got,
                            f">= {value - t.prompt_max_drop:.3f}", got >= value - t.prompt_max_drop))
    for text, value in deployed.target_precision.items():
        got = candidate.target_precision.get(text, 0.0)
        checks.append(Check("hard", f"target precision: '{text}' ({candidate.targets_marked.get(text, 0)} targets)",
                            value, got, f">= {t.precision_floor:.3f}", got >= t.precision_floor))
    for metric in ("mask_ap", "target_iou", "boundary_f"):
        value, got = getattr(deployed, metric), getattr(candidate, metric)
        checks.append(Check("quality", metric.replace("_", " "), value, got, f">= {value - t.quality_max_drop:.3f}",
                            got >= value - t.quality_max_drop))
    return checks


def run_gate(registry: ModelRegistry, candidate: str, deployed: str, suite_name: str,
             thresholds: GateThresholds, device=None) -> GateReport:
    """Evaluate both versions, compare, and record the verdict and report with the candidate."""
    from segmentation_node.sam3_backend.backend import Sam3Backend

    if suite_name not in SUITES:
        raise RegistryError(f"suite must be one of {', '.join(SUITES)}; got {suite_name!r}")
    ontology = load_ontology()
    candidate_sha256 = registry.verify_weights(candidate).sha256  # the weights evaluated below
    scores = {}
    for role, version in (("deployed", deployed), ("candidate", candidate)):
        scores[role] = evaluate_model(lambda v=version: Sam3Backend(load_registered_model(registry, v, device)[1]),
                                      SUITES[suite_name], ontology, f"{role} {version}")
    report = GateReport(candidate, deployed, suite_name, thresholds, scores,
                        compare(scores["candidate"], scores["deployed"], thresholds), candidate_sha256)
    registry.record_gate(candidate, report.to_json(), {"release_report.md": report.to_markdown().encode()})
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workcell_release_gate", description=__doc__.splitlines()[0])
    parser.add_argument("--registry", required=True, help="model registry directory")
    parser.add_argument("--candidate", required=True, help="registered version to judge")
    parser.add_argument("--deployed", default="", help="version to compare with (default: the promoted one)")
    parser.add_argument("--suite", default="standard", choices=sorted(SUITES))
    defaults = GateThresholds()
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=value)
    parser.add_argument("--promote", action="store_true", help="promote the candidate if accepted")
    parser.add_argument("--by", default="", help="who promotes (with --promote)")
    args = parser.parse_args(argv)
    registry = ModelRegistry(args.registry)
    thresholds = GateThresholds(**{name: getattr(args, name) for name in asdict(defaults)})
    try:
        deployed = args.deployed or (registry.promoted().version if registry.promoted() else "")
        if not deployed:
            raise RegistryError("no deployed model to compare with: pass --deployed or promote a first version")
        if args.promote and not args.by.strip():
            raise RegistryError("--promote needs --by NAME")
        report = run_gate(registry, args.candidate, deployed, args.suite, thresholds)
        print(report.to_markdown())
        if args.promote and report.verdict == ACCEPTED:
            registry.promote(args.candidate, args.by, f"release gate accepted vs {deployed}")
            print(f"promoted {args.candidate}")
    except RegistryError as error:
        print(f"workcell_release_gate: {error}", file=sys.stderr)
        return 2
    return 0 if report.verdict == ACCEPTED else 1


if __name__ == "__main__":
    raise SystemExit(main())
