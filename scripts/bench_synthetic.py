#!/usr/bin/env python3
"""Benchmark of the synthetic workcell: frame sets per second, rendering alone and with each
export, by view count and resolution, rendering also as a multiple of a memcpy of the frame
set's bytes. Prints a markdown table and one JSON line (no assertions; see tests/)."""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from segmentation_node.benchmarking import memcpy_ms
from segmentation_node.synthetic.export import BagWriter, CocoWriter
from segmentation_node.synthetic.render import render_frame_set
from segmentation_node.synthetic.scene import ClipConfig, generate_clip


def measure(views: int, width: int, height: int, frames: int) -> dict[str, float]:
    clip = generate_clip(ClipConfig(seed=7, views=views, width=width, height=height, frames=frames))
    rates = {}
    with tempfile.TemporaryDirectory() as scratch:
        for mode in ("render", "render+coco", "render+mcap"):
            coco = CocoWriter(Path(scratch, mode), clip) if mode == "render+coco" else None
            bag = BagWriter(Path(scratch, "bag"), clip, "mcap") if mode == "render+mcap" else None
            start = time.perf_counter()
            for frame in clip.frames:
                rendered = render_frame_set(clip, frame.index)
                if coco:
                    for view in rendered:
                        coco.add(frame.index, view)
                if bag:
                    bag.add(frame.stamp_ns, rendered)
            if coco:
                coco.close()
            if bag:
                bag.close()
            rates[mode] = len(clip.frames) / (time.perf_counter() - start)
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=12, help="frame sets per measurement")
    args = parser.parse_args()
    cases = [(3, 640, 480), (2, 640, 480), (4, 640, 480), (3, 1280, 720)]
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}, "
          f"{args.frames} frame sets per cell, seed 7")
    print("| views | resolution | render (sets/s) | render + COCO (sets/s) | render + MCAP bag (sets/s) "
          "| render ms / memcpy of the set |")
    print("|---|---|---|---|---|---|")
    rows = []
    for views, width, height in cases:
        rates = measure(views, width, height, args.frames)
        copy = memcpy_ms((views, height, width, 3))
        print(f"| {views} | {width}x{height} | {rates['render']:.2f} | {rates['render+coco']:.2f} | "
              f"{rates['render+mcap']:.2f} | {1000.0 / rates['render'] / copy:.0f}x |", flush=True)
        rows.append({"views": views, "width": width, "height": height, "sets_per_s": rates, "memcpy_ms": copy})
    print("\n" + json.dumps({"benchmark": "bench_synthetic", "frames": args.frames, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
