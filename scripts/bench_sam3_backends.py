#!/usr/bin/env python3
"""Benchmark of SAM3's runtimes: torch eager vs onnxruntime vs TensorRT, per exported stage
(backbone, detector) and end to end (a keyframe: backbone + text + detector + tracker
conditioning; a tracking frame: backbone + tracker), by view count, resolution and precision.
Prints a markdown table headed by the device (times also as a multiple of a memcpy of the
views' image bytes) and one JSON line; TensorRT rows say "n/a: <reason>" where it
cannot run. Small random-init model by default (112 and 224 px); the full model only with
--checkpoint or --full-random (1008 px, minutes per configuration on a CPU).

Random weights: timings only, no accuracy."""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Callable

import cv2
import torch

from segmentation_node.benchmarking import cpu_name, median_ms, memcpy_ms
from segmentation_node.perception.types import CameraFrame, Prompt
from segmentation_node.sam3_backend.backend import Sam3Backend
from segmentation_node.sam3_backend.builder import Sam3Model
from segmentation_node.sam3_backend.device import cpu_redirect
from segmentation_node.sam3_backend.engine_cache import EngineCache
from segmentation_node.sam3_backend.onnx_export import (ExportConfig, OnnxRuntimeStage, build_stage,
                                                        export_stage, load_model)
from segmentation_node.sam3_backend.trt_backend import Sam3TrtBackend, TrtStage
from segmentation_node.sam3_backend.trt_engine import (TensorRtUnavailable, ensure_engine,
                                                       require_tensorrt_and_gpu)
from segmentation_node.synthetic.render import render_frame_set
from segmentation_node.synthetic.scene import ClipConfig, generate_clip

STAGES = ("backbone", "detector")
PROMPTS = [Prompt(text, text) for text in ("metal part", "bin", "gripper", "hand", "tool", "box")]


def device_line() -> str:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA GPU"
    return f"CPU: {cpu_name()}, {torch.get_num_threads()} threads (torch and onnxruntime); GPU: {gpu}"


def synced_median_ms(run: Callable[[], object], repeats: int) -> float:
    """median_ms with the GPU's queued work finished inside each timed call."""
    def synced() -> None:
        run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    return median_ms(synced, repeats)


def frame_set(clip, views: int) -> list[list[CameraFrame]]:
    return [[CameraFrame(f"cam{view}", frame.stamp_ns, render.image)
             for view, render in enumerate(render_frame_set(clip, frame.index))][:views]
            for frame in clip.frames]


def end_to_end(backend, frames: list[list[CameraFrame]], prompts: list[Prompt], repeats: int
               ) -> tuple[float, float]:
    """(keyframe ms, tracking frame ms)."""
    def keyframe() -> None:
        backend.process(frames[0], prompts, keyframe=True)

    def tracking() -> None:
        backend.process(frames[1], prompts, keyframe=False)

    return synced_median_ms(keyframe, repeats), synced_median_ms(tracking, repeats)


def write_calibration_images(clip, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for frame in clip.frames:
        for view, render in enumerate(render_frame_set(clip, frame.index)):
            cv2.imwrite(str(folder / f"{frame.index:03d}_{view}.png"),
                        cv2.cvtColor(render.image, cv2.COLOR_RGB2BGR))
    return folder


def bench_configuration(model: Sam3Model, views: int, prompts: int, precisions: list[str],
                        repeats: int, threads: int, scratch: Path) -> list[tuple]:
    """Rows (stage, runtime, precision, ms or None, note) for one model, view count."""
    config = ExportConfig(views, model.image_size, prompts)
    onnx_dir = scratch / f"onnx-{model.image_size}-{views}"
    rows = []
    exported, inputs = {}, {}
    for stage in STAGES:
        start = time.perf_counter()
        exported[stage] = export_stage(model, config, stage, onnx_dir)
        export_s = time.perf_counter() - start
        wrapper = build_stage(model, config, stage)
        inputs[stage] = wrapper.example_inputs()

        def eager(wrapper=wrapper, stage=stage) -> None:
            with torch.inference_mode(), cpu_redirect():
                wrapper(*inputs[stage])

        rows.append((stage, "torch eager", "fp32", synced_median_ms(eager, repeats), ""))
        runner = OnnxRuntimeStage(exported[stage], threads=threads)
        rows.append((stage, "onnxruntime-cpu", "fp32",
                     synced_median_ms(lambda runner=runner, stage=stage: runner(*inputs[stage]), repeats),
                     f"export {export_s:.0f} s"))

    clip = generate_clip(ClipConfig(seed=7, views=max(2, views), width=640, height=480, frames=2))
    frames = frame_set(clip, views)
    prompt_list = PROMPTS[:prompts]
    # Threshold 0: random weights score low; every view then tracks prompts x 5 objects.
    options = dict(score_threshold=0.0, max_detections=5)
    for runtime, backend in (
            ("torch eager", Sam3Backend(model, **options)),
            ("onnxruntime-cpu", Sam3TrtBackend(
                model, OnnxRuntimeStage(exported["backbone"], threads=threads),
                OnnxRuntimeStage(exported["detector"], threads=threads), **options))):
        keyframe_ms, tracking_ms = end_to_end(backend, frames, prompt_list, repeats)
        rows += [("end to end: keyframe", runtime, "fp32", keyframe_ms, ""),
                 ("end to end: tracking frame", runtime, "fp32", tracking_ms, "")]

    for precision in precisions:
        try:
            require_tensorrt_and_gpu()
            if model.device.type != "cuda":
                raise TensorRtUnavailable("the model is on the CPU")
        except TensorRtUnavailable as error:
            rows.append(("all stages", "tensorrt", precision, None, f"n/a: {error}"))
            continue
        cache = EngineCache(scratch / "engines")
        calibration = write_calibration_images(clip, scratch / "calibration")
        runners = {}
        for stage in STAGES:
            plan = ensure_engine(cache, exported[stage], precision, calibration)
            runners[stage] = TrtStage(plan, exported[stage], precision)
            rows.append((stage, "tensorrt", precision,
                         synced_median_ms(lambda r=runners[stage], s=stage: r(*inputs[s]), repeats), ""))
        backend = Sam3TrtBackend(model, runners["backbone"], runners["detector"], **options)
        keyframe_ms, tracking_ms = end_to_end(backend, frames, prompt_list, repeats)
        rows += [("end to end: keyframe", "tensorrt", precision, keyframe_ms, ""),
                 ("end to end: tracking frame", "tensorrt", precision, tracking_ms, "")]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="full model from a local checkpoint (1008 px)")
    source.add_argument("--full-random", action="store_true", help="full-size random model")
    parser.add_argument("--sizes", default="112,224", help="small model resolutions")
    parser.add_argument("--views", default="2,4")
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--precisions", default="fp16,int8", help="TensorRT precisions")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="CPU threads of torch and onnxruntime (1 is steadiest on a shared "
                        "machine: multi-threaded kernels collapse when other jobs take cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    full = bool(args.checkpoint or args.full_random)
    sizes = [None] if full else [int(size) for size in args.sizes.split(",")]
    views_list = [int(views) for views in args.views.split(",")]
    precisions = [p for p in args.precisions.split(",") if p]
    print(device_line())
    print(f"median of {args.repeats} runs after a warm-up, milliseconds; {args.prompts} prompts; "
          "end to end = Sam3Backend.process on synthetic 640x480 frames")
    print()
    copies = {views: memcpy_ms((views, 480, 640, 3)) for views in views_list}
    print("memcpy of the views' 640x480 RGB bytes, same run: "
          + ", ".join(f"{views} views {ms:.3f} ms" for views, ms in copies.items()) + "\n")
    print("| model | input px | views | stage | runtime | precision | ms | ms / memcpy | note |")
    print("|---|---|---|---|---|---|---:|---:|---|")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for size in sizes:
            model = load_model(args.checkpoint, args.full_random, size)
            for views in views_list:
                for stage, runtime, precision, ms, note in bench_configuration(
                        model, views, args.prompts, precisions, args.repeats, args.threads,
                        Path(scratch, f"{size}-{views}")):
                    shown = f"{ms:.1f}" if ms is not None else ""
                    ratio = f"{ms / copies[views]:.0f}x" if ms is not None else ""
                    print(f"| {model.model_version} | {model.image_size} | {views} | {stage} | "
                          f"{runtime} | {precision} | {shown} | {ratio} | {note} |", flush=True)
                    rows.append({"model": model.model_version, "input_px": model.image_size, "views": views,
                                 "stage": stage, "runtime": runtime, "precision": precision, "ms": ms,
                                 "memcpy_ms": copies[views], "note": note})
    print("\n" + json.dumps({"benchmark": "bench_sam3_backends", "device": device_line(), "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
