"""workcell_demo: the embedded default workcell on the CPU.

Generates (once, then from cache) the bundled synthetic 3-view workcell clip, exports it as
COCO and a rosbag2 recording, runs the perception pipeline with the classical backend over it
(an intent change, the hand entering, picks), and writes what a person looks at: an overview
picture of key moments with the predicted targets and forbidden regions and each verdict, and
a summary with the verdict per frame set and the scores against the ground truth.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from segmentation_node.atomic_io import atomic_write_bytes
from segmentation_node.contract import Role
from segmentation_node.overlay import OverlayItem, draw_overlay
from segmentation_node.perception.classical import ColorClassifier
from segmentation_node.synthetic.evaluation import EvaluationReport, classical_pipeline, evaluate_clip
from segmentation_node.perception.intent import resolve_intent
from segmentation_node.perception.pipeline import FrameSetOutcome
from segmentation_node.synthetic.classical_setup import train_classifier
from segmentation_node.synthetic.export import export_clip
from segmentation_node.synthetic.render import ViewRender
from segmentation_node.synthetic.scene import Clip, ClipConfig, generate_clip

# Parts singulated on the bin floor: the classical CPU backend cannot separate parts resting on
# each other (SAM3 can); the hand, the picks, the dimmed lights and the intent change remain.
EMBEDDED_DEFAULT = ClipConfig(seed=7, views=3, width=640, height=480, frames=40, rate_hz=10.0, stacking=False)
FIRST_INTENT = "pick everything"
SECOND_INTENT = "defective items only"
INTENT_CHANGE_FRAME = 8
_SYNTHETIC_SOURCES = Path(__file__).resolve().parent / "synthetic"


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "workcell_segmentation"


def scene_key(config: ClipConfig) -> str:
    """Changes with the configuration and with any change to the generator's code."""
    digest = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode())
    for source in sorted(_SYNTHETIC_SOURCES.glob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def cached_scene(config: ClipConfig, cache: Path, progress: bool = True) -> tuple[Path, bool]:
    """Directory holding coco/ and bag/ of the clip; (path, True) when it came from the cache."""
    target = cache / "synthetic" / scene_key(config)
    if (target / "complete").exists():
        return target, True
    scratch = target.with_name(target.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    export_clip(generate_clip(config), scratch, coco=True, bag_format="mcap", progress=progress)
    atomic_write_bytes(scratch / "complete", b"")
    shutil.rmtree(target, ignore_errors=True)
    scratch.rename(target)
    return target, False


def key_frames(clip: Clip) -> list[tuple[int, str]]:
    """The moments worth looking at: start, intent change, hand in the cell, after a pick, end."""
    moments = [(1, "start"), (INTENT_CHANGE_FRAME, "intent changed")]
    hand_frames = [f.index for f in clip.frames if any(o.label == "hand" for o in f.objects)]
    if hand_frames:
        moments.append((hand_frames[len(hand_frames) // 2], "hand in the cell"))
    picks = [f.index for f in clip.frames if any(e.startswith("picked") for e in f.events)]
    if picks:
        moments.append((picks[-1], "after a pick"))
    moments.append((len(clip.frames) - 1, "end"))
    return sorted(set(m for m in moments if m[0] < len(clip.frames)))


def _tile(render: ViewRender, outcome: FrameSetOutcome, t: float, moment: str) -> np.ndarray:
    items = []
    for instance in outcome.views[render.camera.name]:
        if instance.role is Role.IGNORE and instance.label == "bin":
            continue
        name = instance.label if instance.track_id == 0 else f"{instance.label}#{instance.track_id}"
        items.append(OverlayItem(instance.mask, instance.role, " ".join((name, *instance.attributes))))
    verdict = outcome.verdict
    state = f"ACTIONABLE {verdict.confidence:.2f}" if verdict.actionable else \
        f"NOT ACTIONABLE: {verdict.reasons[0][1]}"
    return draw_overlay(render.image, items, f"{render.camera.name} t={t:.1f}s {moment} | {state}")


@dataclass(frozen=True, eq=False)
class DemoResult:
    clip: Clip
    scene_dir: Path
    scene_from_cache: bool
    picture: np.ndarray
    timeline: list  # (frame, verdict, intent text) per frame set
    report: EvaluationReport


def run_demo(config: ClipConfig, cache: Path, progress: bool = True) -> DemoResult:
    """The classical pipeline over the embedded scene, as the segmentation node will run it."""
    clip = generate_clip(config)
    scene_dir, from_cache = cached_scene(config, cache, progress)
    classifier = cached_classifier(config, cache)
    pipeline = classical_pipeline(clip, FIRST_INTENT, classifier=classifier)
    moments = dict(key_frames(clip))
    tiles, timeline = {}, []

    def observe(frame, renders, outcome):
        if frame.index + 1 == INTENT_CHANGE_FRAME:  # takes effect on the next frame set
            pipeline.set_intent(resolve_intent(SECOND_INTENT, pipeline.ontology))
        if frame.index in moments:
            t = frame.index / config.rate_hz
            tiles[frame.index] = np.concatenate([_tile(r, outcome, t, moments[frame.index]) for r in renders], axis=1)
        timeline.append((frame, outcome.verdict, pipeline.intent.text))

    report = evaluate_clip(clip, pipeline, observer=observe)
    picture = np.concatenate([tiles[index] for index in sorted(tiles)], axis=0)
    return DemoResult(clip, scene_dir, from_cache, picture, timeline, report)


def cached_classifier(config: ClipConfig, cache: Path) -> ColorClassifier:
    """The colour table for this cell, trained once on scenes of other seeds."""
    path = cache / "classical" / f"{scene_key(config)}.npz"
    if path.exists():
        return ColorClassifier.load(path)
    classifier = train_classifier(replace(config, frames=20))
    classifier.save(path)
    return classifier


def summary(result: DemoResult, picture_path: Path) -> str:
    config, report = result.clip.config, result.report
    lines = [
        "# Workcell demo: embedded default scene, classical CPU backend", "",
        f"- scene: seed {config.seed}, {config.views} cameras at {config.width}x{config.height}, "
        f"{config.frames} frame sets at {config.rate_hz:g} Hz "
        f"({'from cache' if result.scene_from_cache else 'generated now'})",
        f"- COCO: `{result.scene_dir / 'coco' / 'annotations.json'}`",
        f"- rosbag2 (MCAP): `{result.scene_dir / 'bag'}` (replay with `ros2 bag play` on a robot)",
        f"- overview: `{picture_path}` (green: targets, red: forbidden incl. intrusion, grey: ignored)",
        f"- intent: \"{FIRST_INTENT}\", then \"{SECOND_INTENT}\" from frame {INTENT_CHANGE_FRAME}", "",
        "## Verdict per frame set", "", "| t (s) | frame | scene events | intent | verdict |", "|---|---|---|---|---|",
    ]
    for frame, verdict, intent in result.timeline:
        state = f"actionable ({verdict.confidence:.2f})" if verdict.actionable else \
            "not actionable: " + "; ".join(text for _, text in verdict.reasons)
        lines.append(f"| {frame.index / config.rate_hz:.1f} | {frame.index} | {', '.join(frame.events) or ''} "
                     f"| {intent} | {state} |")
    lines += ["", "## Against the ground truth", "", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in report.rows()]
    lines += ["", "The segmentation and operator-intent nodes will run this over DDS once they land.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workcell_demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="where the picture and summary go")
    parser.add_argument("--cache", type=Path, default=default_cache_dir(), help="where generated scenes are kept")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    result = run_demo(EMBEDDED_DEFAULT, args.cache, progress=not args.quiet)
    picture = args.out / "overview.png"
    ok, png = cv2.imencode(".png", cv2.cvtColor(result.picture, cv2.COLOR_RGB2BGR))
    if not ok:
        print("workcell_demo: could not encode the overview picture", file=sys.stderr)
        return 1
    atomic_write_bytes(picture, png.tobytes())
    text = summary(result, picture)
    atomic_write_bytes(args.out / "summary.md", text.encode())
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
