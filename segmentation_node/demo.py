"""workcell_demo: the embedded default workcell on the CPU.

Generates (once, then from cache) the bundled synthetic 3-view workcell clip, exports it as
COCO and a rosbag2 recording, and writes what a person looks at: an overview picture of key
moments with the ground-truth targets and forbidden regions drawn, and a summary.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
from pycocotools.coco import COCO

from segmentation_node.atomic_io import atomic_write_bytes
from segmentation_node.contract import Role
from segmentation_node.overlay import OverlayItem, draw_overlay
from segmentation_node.synthetic.export import export_clip
from segmentation_node.synthetic.scene import Clip, ClipConfig, generate_clip

EMBEDDED_DEFAULT = ClipConfig(seed=7, views=3, width=640, height=480, frames=40, rate_hz=10.0)
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
    """The moments worth looking at: start, hand in the cell, after the first pick, the end."""
    moments = [(0, "start")]
    hand_frames = [f.index for f in clip.frames if any(o.label == "hand" for o in f.objects)]
    if hand_frames:
        moments.append((hand_frames[len(hand_frames) // 2], "hand in the cell"))
    picks = [f.index for f in clip.frames if any(e.startswith("picked") for e in f.events)]
    if picks:
        moments.append((picks[0], "after a pick"))
    moments.append((len(clip.frames) - 1, "end"))
    return sorted(set(moments))


def overview(coco_file: Path, clip: Clip, moments: list[tuple[int, str]]) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools narrates its loading
        coco = COCO(str(coco_file))
    categories = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    by_frame_camera = {(i["frame_index"], i["camera"]): i for i in coco.loadImgs(coco.getImgIds())}
    rows = []
    for frame_index, moment in moments:
        tiles = []
        for camera in clip.cameras:
            image_info = by_frame_camera[(frame_index, camera.name)]
            image = cv2.cvtColor(cv2.imread(str(coco_file.parent / image_info["file_name"])), cv2.COLOR_BGR2RGB)
            items = []
            for annotation in coco.loadAnns(coco.getAnnIds(imgIds=image_info["id"])):
                role = Role[annotation["role"].upper()]
                if role is Role.IGNORE:
                    continue
                label = categories[annotation["category_id"]]
                text = f"{label}#{annotation['track_id']}" + (" defective" if annotation["attributes"] else "")
                items.append(OverlayItem(coco.annToMask(annotation).astype(bool), role, text))
            t = frame_index / clip.config.rate_hz
            tiles.append(draw_overlay(image, items, f"{camera.name}  t={t:.1f}s  {moment}"))
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


def summary(clip: Clip, scene_dir: Path, from_cache: bool, picture: Path) -> str:
    config = clip.config
    first = clip.frames[0]
    lines = [
        "# Workcell demo: embedded default scene", "",
        f"- scene: seed {config.seed}, {config.views} cameras at {config.width}x{config.height}, "
        f"{config.frames} frame sets at {config.rate_hz:g} Hz ({'from cache' if from_cache else 'generated now'})",
        f"- COCO: `{scene_dir / 'coco' / 'annotations.json'}`",
        f"- rosbag2 (MCAP): `{scene_dir / 'bag'}` — replay with `ros2 bag play` on a robot",
        f"- overview picture: `{picture}` (green: targets, red: forbidden; one row per key moment)", "",
        "## Objects at the start", "", "| track id | label | attributes | role |", "|---|---|---|---|",
    ]
    for obj in first.objects:
        lines.append(f"| {obj.track_id} | {obj.label} | {', '.join(obj.attributes) or '-'} | {obj.role.name.lower()} |")
    lines += ["", "## Timeline", "", "| t (s) | frame | event |", "|---|---|---|"]
    for frame in clip.frames:
        for event in frame.events:
            lines.append(f"| {frame.index / config.rate_hz:.1f} | {frame.index} | {event} |")
    lines += ["", "The segmentation and operator-intent nodes will run on this scene here once they land; "
              "for now this shows the scene and its ground truth.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workcell_demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="where the picture and summary go")
    parser.add_argument("--cache", type=Path, default=default_cache_dir(), help="where generated scenes are kept")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    clip = generate_clip(EMBEDDED_DEFAULT)
    scene_dir, from_cache = cached_scene(EMBEDDED_DEFAULT, args.cache, progress=not args.quiet)
    picture = args.out / "overview.png"
    ok, png = cv2.imencode(".png", cv2.cvtColor(overview(scene_dir / "coco" / "annotations.json", clip,
                                                         key_frames(clip)), cv2.COLOR_RGB2BGR))
    if not ok:
        print("workcell_demo: could not encode the overview picture", file=sys.stderr)
        return 1
    atomic_write_bytes(picture, png.tobytes())
    text = summary(clip, scene_dir, from_cache, picture)
    atomic_write_bytes(args.out / "summary.md", text.encode())
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
