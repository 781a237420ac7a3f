#!/usr/bin/env python3
"""Benchmark of the ROS-free runtime path with the classical backend, in one process: frame
sets per second, and the work around the model (pipeline time minus backend inference, plus
the wire RLE of every instance) as a multiple of a memcpy of the same image bytes measured in
the same run. Prints a markdown table and one JSON line; asserts nothing (see tests/)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from segmentation_node.benchmarking import cpu_name, memcpy_ms  # noqa: E402
from segmentation_node.perception.actionability import Conditions  # noqa: E402
from segmentation_node.perception.types import CameraFrame  # noqa: E402
from segmentation_node.synthetic.classical_setup import train_classifier  # noqa: E402
from segmentation_node.synthetic.evaluation import classical_pipeline  # noqa: E402
from segmentation_node.synthetic.render import render_frame_set  # noqa: E402
from segmentation_node.synthetic.scene import ClipConfig, generate_clip  # noqa: E402


def measure(views: int, width: int, height: int, frame_sets: int) -> dict:
    config = ClipConfig(seed=7, views=views, width=width, height=height, frames=frame_sets + 1)
    clip = generate_clip(config)
    classifier = train_classifier(replace(config, frames=4), seeds=(101,), frames_per_clip=2)
    pipeline = classical_pipeline(clip, classifier=classifier)
    sets = [[CameraFrame(view.camera.name, frame.stamp_ns, view.image) for view in render_frame_set(clip, frame.index)]
            for frame in clip.frames]
    pipeline.process(sets[0], Conditions.offline())  # warm-up: first calls allocate and import
    totals, backend, rle = [], [], []
    for views_of_set in sets[1:]:
        started = time.perf_counter()
        outcome = pipeline.process(views_of_set, Conditions.offline())
        encoding = time.perf_counter()
        for instances in outcome.views.values():
            for instance in instances:
                instance.mask.rle_counts()
        done = time.perf_counter()
        totals.append((done - started) * 1000.0)
        backend.append(outcome.inference_ms)
        rle.append((done - encoding) * 1000.0)
    copy = memcpy_ms((views, height, width, 3))
    overhead = float(np.median(np.array(totals) - np.array(backend)))
    return {"views": views, "width": width, "height": height, "frame_sets": frame_sets,
            "frame_sets_per_s": 1000.0 / float(np.median(totals)), "total_ms_p50": float(np.median(totals)),
            "backend_ms_p50": float(np.median(backend)), "rle_ms_p50": float(np.median(rle)),
            "overhead_ms_p50": overhead, "memcpy_ms": copy, "overhead_per_memcpy": overhead / copy}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["3x640x480", "4x1280x720"], help="VIEWSxWIDTHxHEIGHT")
    parser.add_argument("--frame-sets", type=int, default=20)
    args = parser.parse_args()
    rows = [measure(*(int(v) for v in config.split("x")), args.frame_sets) for config in args.configs]
    print(f"classical backend, in-process, {args.frame_sets} frame sets each "
          f"({cpu_name()})\n")
    print("| views | frame sets/s | total p50 ms | backend p50 ms | around the model p50 ms (incl. RLE) "
          "| memcpy ms | around the model / memcpy |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['views']}x{row['width']}x{row['height']} | {row['frame_sets_per_s']:.1f} | "
              f"{row['total_ms_p50']:.1f} | {row['backend_ms_p50']:.1f} | {row['overhead_ms_p50']:.2f} | "
              f"{row['memcpy_ms']:.3f} | {row['overhead_per_memcpy']:.0f}x |")
    print("\n" + json.dumps({"benchmark": "bench_pipeline", "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
