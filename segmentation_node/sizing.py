"""workcell_sizing: the camera rate SAM3 holds on Jetson Thor / Orin (or this CPU) for a profile.

The work of every stage is counted on the real full-size SAM3 architecture with random weights
(`sam3_backend/work_count.py`: FLOPs and the bytes its kernels move). A small device table turns
work into time: per stage the slower of compute (FLOPs / dense peak at the stage's precision) and
memory (bytes / bandwidth), divided by one efficiency factor per device that is calibrated on a
published SAM3 measurement (TensorRT on Thor and Orin) or, for this CPU, on the small model
measured here. Keyframe frame sets run the detector on every view x prompt and condition the
tracker; the frame sets between only run the backbone and one tracker step per object.

A profile (config/<profile>.yaml) gives the node's settings (cameras, keyframe_interval,
precision, image_size, max_objects, worker_queue) and, under `/**/workcell_sizing` (read by this
tool only), the device, the camera rate to hold, the prompts in force and the longest acceptable
gap between detector passes (a new object is named at the next keyframe; the intrusion monitor
flags unknown objects on every frame set).
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

from segmentation_node.atomic_io import atomic_write_bytes
from segmentation_node.launch_plan import profile_parameters
from segmentation_node.parameters import SEGMENTATION_PARAMETERS
from segmentation_node.sam3_backend.input_size import FULL_IMAGE_SIZE, check_image_size

BACKBONE, TEXT, HEAD, TRACKER_KEYFRAME, TRACKER_STEP = (
    "backbone", "text encoder", "detector head", "tracker keyframe", "tracker step")
STAGES = (BACKBONE, TEXT, HEAD, TRACKER_KEYFRAME, TRACKER_STEP)
UNITS = {BACKBONE: "view", TEXT: "prompt (once per prompt set)", HEAD: "view x prompt",
         TRACKER_KEYFRAME: "object", TRACKER_STEP: "object"}
PRECISION_BYTES = {"fp32": 4, "fp16": 2, "int8": 1, "fp8": 1}
QUANTIZED = ("int8", "fp8")
# Input sizes tried when resolution is the knob (multiples of the 14 px patch).
RESOLUTIONS = (1008, 924, 840, 756, 672, 588, 504)
DEFAULT_MEMORY_FRAMES = 6  # TrackerStream's default memory bank
DEFAULT_COUNT_CACHE = Path("~/.cache/workcell_segmentation/sizing")


@dataclass(frozen=True)
class StageWork:
    """FLOPs and the tensor elements a stage's kernels read and write, for one unit (a view, a
    prompt, a view x prompt pair, an object) and once per batch of units (the weights)."""

    flops: float
    elements: float
    fixed_flops: float = 0.0
    fixed_elements: float = 0.0

    def batch(self, units: int) -> tuple[float, float]:
        if not units:
            return 0.0, 0.0
        return self.fixed_flops + units * self.flops, self.fixed_elements + units * self.elements

    @classmethod
    def fit(cls, one: "StageWork", two: "StageWork") -> "StageWork":
        """Per-unit and fixed work from batches of one and two units."""
        flops, elements = two.flops - one.flops, two.elements - one.elements
        return cls(flops, elements, max(0.0, one.flops - flops), max(0.0, one.elements - elements))


@dataclass(frozen=True)
class ModelWork:
    """Per-unit work of every stage of one model at one input size."""

    model: str
    image_size: int
    memory_frames: int  # tracker memory in the counted steady state
    stages: dict[str, StageWork]

    def to_dict(self) -> dict:
        return {"model": self.model, "image_size": self.image_size, "memory_frames": self.memory_frames,
                "stages": {name: asdict(work) for name, work in self.stages.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> "ModelWork":
        return cls(data["model"], int(data["image_size"]), int(data["memory_frames"]),
                   {name: StageWork(**work) for name, work in data["stages"].items()})


@dataclass(frozen=True)
class Device:
    key: str
    name: str
    peak: dict[str, float]  # dense throughput by precision, operations per second
    bandwidth: float        # bytes per second
    source: str


@dataclass(frozen=True)
class Reference:
    """A measured time the device's efficiency is calibrated on: one unit of each stage (one
    view, one prompt) at the precision it ran in."""

    ms: float
    image_size: int
    precisions: dict[str, str]  # stage -> precision
    what: str


# Dense tensor-core rates derived from NVIDIA's published peaks (sparse figures halved; each
# halving of precision doubles the rate). fp32 runs as TF32: TensorRT's default, and sam3
# enables it in torch.
DEVICES = {
    "thor": Device("thor", "Jetson AGX Thor (T5000, MAXN)",
                   {"fp32": 129.4e12, "fp16": 258.75e12, "int8": 517.5e12, "fp8": 517.5e12}, 273e9,
                   "NVIDIA Jetson AGX Thor: 2070 FP4 TFLOPS (sparse), 273 GB/s LPDDR5X; dense FP8 / "
                   "INT8 = 1/4, FP16 = 1/8, TF32 = 1/16 of it"),
    "orin": Device("orin", "Jetson AGX Orin 64GB (MAXN)",
                   {"fp32": 21.25e12, "fp16": 42.5e12, "int8": 85e12}, 204.8e9,
                   "NVIDIA Jetson AGX Orin 64GB: GPU 170 INT8 TOPS (sparse), 204.8 GB/s LPDDR5; dense "
                   "INT8 = 1/2, FP16 = 1/4, TF32 = 1/8 of it; no FP8 (Ampere)"),
}
# embedl's published SAM3 figures: the image model (detector branch), one image, one text prompt,
# 924 x 924, a mixed INT8/FP16 TensorRT build (PyTorch on the same devices: Thor 137 ms, Orin 763 ms).
_EMBEDL = "embedl, SAM3 image model at 924 px, mixed INT8/FP16 TensorRT"
_MIXED = {BACKBONE: "int8", TEXT: "fp16", HEAD: "fp16"}
REFERENCES = {
    "thor": Reference(90.9, 924, _MIXED, _EMBEDL),
    "orin": Reference(462.0, 924, _MIXED, _EMBEDL),
}


@dataclass(frozen=True)
class Workload:
    views: int
    prompts: int
    objects: int             # tracked objects per view (max_objects)
    keyframe_interval: int   # a detector pass every N frame sets
    precision: str
    image_size: int

    def units(self, stage: str) -> tuple[int, int]:
        """(units in a keyframe frame set, units in a tracking frame set). The text encoder runs
        when the prompt set changes (a new intent), not per frame set (Sam3Predictor.encode_text)."""
        views, prompts, objects = self.views, self.prompts, self.objects
        return {BACKBONE: (views, views), TEXT: (0, 0), HEAD: (views * prompts, 0),
                TRACKER_KEYFRAME: (views * objects, 0), TRACKER_STEP: (0, views * objects)}[stage]


def stage_precision(stage: str, precision: str) -> str:
    """As backend sam3_trt runs them: the backbone is a TensorRT engine at `precision`; text
    encoder, detector head and tracker run in torch in fp32 (TF32 on the GPU's tensor cores:
    sam3 enables it), since prompts and the tracker's memory change shape at run time."""
    return precision if stage == BACKBONE else "fp32"


def stage_ms(work: StageWork, units: int, device: Device, precision: str, efficiency: float = 1.0) -> float:
    """`units` of a stage in one batch: the slower of compute and memory, over the efficiency."""
    if precision not in device.peak:
        raise ValueError(f"{device.name} has no {precision} (it has {', '.join(device.peak)})")
    flops, elements = work.batch(units)
    compute = flops / device.peak[precision]
    memory = elements * PRECISION_BYTES[precision] / device.bandwidth
    return max(compute, memory) / efficiency * 1000.0


def calibrate(device: Device, reference: Reference, work: ModelWork) -> float:
    """Efficiency: the roofline time of the reference workload over its measured time."""
    if work.image_size != reference.image_size:
        raise ValueError(f"reference is at {reference.image_size} px, work counted at {work.image_size}")
    ideal = sum(stage_ms(work.stages[stage], 1, device, precision)
                for stage, precision in reference.precisions.items())
    return ideal / reference.ms


@dataclass(frozen=True)
class Prediction:
    workload: Workload
    keyframe_stage_ms: dict[str, float]  # per stage, in a frame set with a detector pass
    tracking_stage_ms: dict[str, float]  # per stage, in a frame set in between

    @property
    def keyframe_ms(self) -> float:
        return sum(self.keyframe_stage_ms.values())

    @property
    def tracking_ms(self) -> float:
        return sum(self.tracking_stage_ms.values())

    @property
    def amortized_ms(self) -> float:
        interval = self.workload.keyframe_interval
        return (self.keyframe_ms + (interval - 1) * self.tracking_ms) / interval

    @property
    def view_frame_ms(self) -> float:
        return self.amortized_ms / self.workload.views

    @property
    def max_rate_hz(self) -> float:
        return 1000.0 / self.amortized_ms

    def queue_needed(self, rate_hz: float) -> int:
        """Frame sets that arrive while a keyframe runs: the worker queue that drops none."""
        return max(1, math.ceil(self.keyframe_ms * rate_hz / 1000.0 - 1e-9))

    def detection_gap_s(self, rate_hz: float) -> float:
        """Longest time a new object waits for the detector: one keyframe interval plus the pass."""
        return self.workload.keyframe_interval / rate_hz + self.keyframe_ms / 1000.0

    def holds(self, rate_hz: float, worker_queue: int) -> bool:
        """Every frame set at `rate_hz` is processed: throughput, and a queue for keyframes."""
        return self.max_rate_hz >= rate_hz and self.queue_needed(rate_hz) <= worker_queue


def predict(workload: Workload, work: ModelWork, device: Device, efficiency: float) -> Prediction:
    if work.image_size != workload.image_size:
        raise ValueError(f"work counted at {work.image_size} px, workload at {workload.image_size}")

    def frame_set(which: int) -> dict[str, float]:
        return {stage: stage_ms(work.stages[stage], workload.units(stage)[which], device,
                                stage_precision(stage, workload.precision), efficiency)
                for stage in STAGES}
    return Prediction(workload, frame_set(0), frame_set(1))


@dataclass(frozen=True)
class Target:
    rate_hz: float  # frame sets per second the cameras are triggered at
    worker_queue: int
    max_detection_gap_s: float
    stale_after_s: float = math.inf  # the node's limit on a camera's silence

    @property
    def stale_ok(self) -> bool:
        """A camera is not called stale between two frames (two periods of margin)."""
        return self.stale_after_s >= 2.0 / self.rate_hz


@dataclass(frozen=True)
class Option:
    knob: str
    change: str
    prediction: Prediction
    worker_queue: int = 0  # the queue this step sets (knob "worker queue")


OBJECT_STEPS = (12, 8, 6, 4)  # fewer tracks cannot cover targets and forbidden regions


def plan(workload: Workload, target: Target, device: Device,
         evaluate: Callable[[Workload], Prediction]) -> list[Option]:
    """The knobs to turn, in order, until the workload holds the target rate (or none is left):
    each knob is turned only as far as needed and only while it gains rate. Order: precision (no
    loss of coverage; the precision check guards accuracy), keyframe interval (up as far as the
    detection-gap limit allows, keyframe_interval / rate, or down where tracking frame sets cost
    more than keyframes), tracked objects (down to 4), input
    size (down to 504 px), views; then the worker queue that absorbs a keyframe."""
    rate, limit = target.rate_hz, target.max_detection_gap_s
    steps: list[Option] = []
    current, prediction = workload, evaluate(workload)

    def settled(candidate: Prediction) -> bool:
        return candidate.max_rate_hz >= rate

    # Fewer keyframes gain rate only while a keyframe costs more than a tracking frame set (the
    # tracker's memory attention can cost more than the detector): else the interval goes down.
    intervals = (range(workload.keyframe_interval + 1, int(limit * rate) + 1)
                 if prediction.keyframe_ms > prediction.tracking_ms
                 else range(workload.keyframe_interval - 1, 0, -1))
    knobs = (  # (knob, Workload field, node parameter, settings to try in order)
        ("precision", "precision", "precision",
         [p for p in QUANTIZED[:1] if p in device.peak and workload.precision not in QUANTIZED]),
        ("keyframe interval", "keyframe_interval", "keyframe_interval", list(intervals)),
        ("tracked objects", "objects", "max_objects", [n for n in OBJECT_STEPS if n < workload.objects]),
        ("input size", "image_size", "image_size", [n for n in RESOLUTIONS if n < workload.image_size]),
        ("views", "views", "views", list(range(workload.views - 1, 0, -1))))
    for knob, field, parameter, settings in knobs:
        for setting in settings:
            if settled(prediction):
                break
            candidate = replace(current, **{field: setting})
            turned = evaluate(candidate)
            if turned.max_rate_hz <= prediction.max_rate_hz:
                break
            current, prediction = candidate, turned
            if steps and steps[-1].knob == knob:
                steps.pop()  # one entry per knob: as far as it was turned
            steps.append(Option(knob, f"{parameter} {getattr(workload, field)} -> {setting}", turned))
    needed = prediction.queue_needed(rate)
    if settled(prediction) and needed > target.worker_queue:
        steps.append(Option("worker queue", f"worker_queue {target.worker_queue} -> {needed}", prediction,
                            worker_queue=needed))
    return steps


# --- counting (torch and sam3 only here) -------------------------------------------------------

def count_cache_key(image_size: int, memory_frames: int) -> str:
    """Counts change with the sam3 and torch versions and with the counting code."""
    import importlib.metadata

    import torch

    from segmentation_node.sam3_backend import work_count
    code = hashlib.sha256(Path(work_count.__file__).read_bytes()).hexdigest()[:12]
    return (f"sam3-{importlib.metadata.version('sam3')}-torch-{torch.__version__}-code-{code}"
            f"-{image_size}px-mem{memory_frames}")


def full_size_work(image_size: int, memory_frames: int = DEFAULT_MEMORY_FRAMES,
                   cache_dir: Path | None = DEFAULT_COUNT_CACHE,
                   log: Callable[[str], None] = print) -> ModelWork:
    """The full-size architecture's per-unit work at `image_size`, from the count cache when it
    holds it (counting takes ~30 s on a CPU)."""
    path = None
    if cache_dir is not None:
        path = Path(cache_dir).expanduser() / f"{count_cache_key(image_size, memory_frames)}.json"
        if path.is_file():
            try:
                return ModelWork.from_dict(json.loads(path.read_text()))
            except (ValueError, KeyError, TypeError) as error:
                log(f"workcell_sizing: ignoring unreadable count cache {path}: {error}")
    from segmentation_node.sam3_backend.builder import build_full_size_sam3_random, resize_input
    from segmentation_node.sam3_backend.work_count import count_model

    log(f"counting the full-size SAM3 architecture at {image_size} px (random weights, ~30 s)")
    model = build_full_size_sam3_random(device="cpu")
    resize_input(model, image_size)
    work = count_model(model, memory_frames)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(work.to_dict(), indent=1).encode())
    return work


# --- profiles and the command line ------------------------------------------------------------

@dataclass(frozen=True)
class Profile:
    name: str
    device: str
    workload: Workload
    target: Target


def load_profile(path: Path) -> Profile:
    """The node's settings (the profile over the declared defaults) and the sizing assumptions."""
    node = {spec.name: spec.default for spec in SEGMENTATION_PARAMETERS} | profile_parameters(path)
    sizing = profile_parameters(path, "workcell_sizing")
    if not sizing:
        raise ValueError(f"{path}: no '/**/workcell_sizing' section (device, camera_rate_hz, ...)")
    workload = Workload(views=len(node["cameras"]), prompts=int(sizing["prompts"]),
                        objects=int(node["max_objects"]), keyframe_interval=int(node["keyframe_interval"]),
                        precision=str(sizing.get("precision") or node["precision"]),
                        image_size=int(node["image_size"] or FULL_IMAGE_SIZE))
    target = Target(float(sizing["camera_rate_hz"]), int(node["worker_queue"]),
                    float(sizing["max_detection_gap_s"]), float(node["stale_after_s"]))
    return Profile(Path(path).stem, str(sizing["device"]), workload, target)


@dataclass(frozen=True)
class CpuCalibration:
    """This machine: fp32 GEMM rate and copy bandwidth measured now, the efficiency calibrated on
    the small model's backbone measured now (its other stages are the check: bench_sizing.py)."""

    device: Device
    efficiency: float
    work: ModelWork             # the small model's
    measured_ms: dict[str, float]  # per stage, one unit

    @property
    def what(self) -> str:
        return f"small SAM3 model's backbone at {self.work.image_size} px, measured here"


def calibrate_this_cpu(image_size: int = 224, repeats: int = 3,
                       log: Callable[[str], None] = print) -> CpuCalibration:
    from segmentation_node.benchmarking import copy_bandwidth, cpu_name, gemm_rate
    from segmentation_node.sam3_backend.work_count import measure_small_model

    device = Device("cpu", cpu_name(), {"fp32": gemm_rate()}, copy_bandwidth(),
                    "measured in this run: torch fp32 GEMM 2048^3, numpy copy of 256 MiB")
    log(f"measuring the small SAM3 model on {device.name} for the CPU calibration")
    work, measured = measure_small_model(image_size, repeats)
    reference = Reference(measured[BACKBONE], work.image_size, {BACKBONE: "fp32"}, "small backbone")
    return CpuCalibration(device, calibrate(device, reference, work), work, measured)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workcell_sizing", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", required=True, help="thor, orin, cpu or a profile YAML path")
    parser.add_argument("--resolution", type=int, help="square input size in px (multiple of 14)")
    parser.add_argument("--views", type=int)
    parser.add_argument("--keyframe-interval", type=int)
    parser.add_argument("--max-objects", type=int, help="tracked objects per view")
    parser.add_argument("--prompts", type=int)
    parser.add_argument("--precision", choices=tuple(PRECISION_BYTES))
    parser.add_argument("--rate", type=float, help="camera rate to hold, Hz")
    parser.add_argument("--count-cache", default=str(DEFAULT_COUNT_CACHE),
                        help="folder of counted work per input size ('' = always count)")
    parser.add_argument("--table", action="store_true",
                        help="Thor and Orin over input size x views x keyframe interval x precision, "
                             "with the profile's prompts and tracked objects")
    args = parser.parse_args(argv)
    from segmentation_node.package_files import share_path

    path = Path(args.profile) if args.profile.endswith(".yaml") else share_path(f"config/{args.profile}.yaml")
    try:
        profile = load_profile(path)
        workload = replace(profile.workload, **{name: value for name, value in (
            ("image_size", args.resolution), ("views", args.views),
            ("keyframe_interval", args.keyframe_interval), ("objects", args.max_objects),
            ("prompts", args.prompts), ("precision", args.precision)) if value is not None})
        target = replace(profile.target, rate_hz=args.rate or profile.target.rate_hz)
        validate(workload, target)
        cache = Path(args.count_cache) if args.count_cache else None
        if args.table:
            print(sizing_table(workload, cache))
            return 0
        report = size(profile.device, workload, target, cache)
    except (ValueError, KeyError, FileNotFoundError) as error:
        print(f"workcell_sizing: {error}", file=sys.stderr)
        return 2
    print(report.to_markdown())
    print(json.dumps(report.to_json()))
    return 0 if report.holds else 1


def validate(workload: Workload, target: Target) -> None:
    check_image_size(workload.image_size, "resolution")
    for name in ("views", "prompts", "objects", "keyframe_interval"):
        if getattr(workload, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(workload, name)}")
    if target.rate_hz <= 0:
        raise ValueError(f"camera rate must be > 0, got {target.rate_hz}")


@dataclass(frozen=True)
class SizingReport:
    device: Device
    efficiency: float
    calibration: str
    prediction: Prediction
    target: Target
    work: ModelWork
    plan: list[Option]

    @property
    def holds(self) -> bool:
        return self.prediction.holds(self.target.rate_hz, self.target.worker_queue)

    @property
    def gap_ok(self) -> bool:
        return self.prediction.detection_gap_s(self.target.rate_hz) <= self.target.max_detection_gap_s

    @property
    def plan_holds(self) -> bool:
        queue = max([self.target.worker_queue] + [step.worker_queue for step in self.plan])
        return bool(self.plan) and self.plan[-1].prediction.holds(self.target.rate_hz, queue)

    def to_markdown(self) -> str:
        p, w, t = self.prediction, self.prediction.workload, self.target
        lines = [f"device: {self.device.name} ({self.device.source})",
                 f"efficiency {self.efficiency:.3f} of the roofline, calibrated on: {self.calibration}",
                 f"workload: {w.views} views, {w.image_size} px, {w.prompts} prompts, {w.objects} objects "
                 f"per view, keyframe every {w.keyframe_interval}, {w.precision}; target {t.rate_hz:g} Hz",
                 "", "| stage | unit | GFLOP: per unit + per batch | MB: per unit + per batch | precision "
                 "| units per keyframe / tracking frame set | ms per keyframe / tracking frame set |",
                 "|---|---|---:|---:|---|---:|---:|"]
        for stage in STAGES:
            work, precision = self.work.stages[stage], stage_precision(stage, w.precision)
            key, track = w.units(stage)
            size = PRECISION_BYTES[precision] / 1e6
            lines.append(f"| {stage} | {UNITS[stage]} | {work.flops / 1e9:.1f} + {work.fixed_flops / 1e9:.1f} | "
                         f"{work.elements * size:.0f} + {work.fixed_elements * size:.0f} | {precision} | "
                         f"{key} / {track} | {p.keyframe_stage_ms[stage]:.1f} / {p.tracking_stage_ms[stage]:.1f} |")
        verdict = "holds" if self.holds else "does not hold"
        gap = p.detection_gap_s(t.rate_hz)
        lines += ["", f"keyframe frame set {p.keyframe_ms:.0f} ms, tracking frame set {p.tracking_ms:.0f} ms, "
                      f"amortized {p.amortized_ms:.0f} ms per frame set = {p.view_frame_ms:.0f} ms per view-frame",
                  f"largest camera rate held: {p.max_rate_hz:.2f} Hz; at {t.rate_hz:g} Hz: worker queue "
                  f"{p.queue_needed(t.rate_hz)} needed (profile {t.worker_queue}): {verdict}",
                  f"new parts named within {gap:.1f} s of appearing (limit {t.max_detection_gap_s:g} s"
                  f"{'' if self.gap_ok else ': exceeded, lower keyframe_interval'})"]
        if not t.stale_ok:
            lines.append(f"stale_after_s {t.stale_after_s:g} s is under two frame periods at {t.rate_hz:g} Hz: "
                         "cameras would be called stale between frames (nothing actionable)")
        if not self.holds:
            if self.plan:
                lines.append("turn, in order: " + "; then ".join(
                    f"{step.change} ({step.prediction.max_rate_hz:.2f} Hz)" for step in self.plan))
                lines.append("  -> holds" if self.plan_holds else
                             "  -> still does not hold: a lower camera rate or a faster device")
            else:
                lines.append("no knob gains rate: a lower camera rate or a faster device")
        return "\n".join(lines)

    def to_json(self) -> dict:
        p = self.prediction
        return {"device": self.device.key, "efficiency": round(self.efficiency, 4),
                "workload": asdict(p.workload), "target": asdict(self.target),
                "keyframe_stage_ms": {stage: round(ms, 2) for stage, ms in p.keyframe_stage_ms.items()},
                "tracking_stage_ms": {stage: round(ms, 2) for stage, ms in p.tracking_stage_ms.items()},
                "keyframe_ms": round(p.keyframe_ms, 1), "tracking_ms": round(p.tracking_ms, 1),
                "amortized_ms": round(p.amortized_ms, 1), "view_frame_ms": round(p.view_frame_ms, 1),
                "max_rate_hz": round(p.max_rate_hz, 3), "holds": self.holds,
                "detection_gap_s": round(p.detection_gap_s(self.target.rate_hz), 2), "gap_ok": self.gap_ok,
                "plan": [step.change for step in self.plan], "plan_holds": self.plan_holds}


class Sizer:
    """Predictions for one device: its efficiency calibrated once, counts per input size from the
    count cache (or counted)."""

    def __init__(self, device_key: str, cache_dir: Path | None,
                 log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)):
        self.cache_dir, self.log = cache_dir, log
        self._works: dict[int, ModelWork] = {}
        if device_key == "cpu":
            cpu = calibrate_this_cpu(log=log)
            self.device, self.efficiency, self.calibration = cpu.device, cpu.efficiency, cpu.what
        elif device_key in DEVICES:
            reference = REFERENCES[device_key]
            self.device = DEVICES[device_key]
            self.efficiency = calibrate(self.device, reference, self.work_at(reference.image_size))
            self.calibration = f"{reference.what}: {reference.ms:g} ms"
        else:
            raise ValueError(f"unknown device '{device_key}' (thor, orin or cpu)")

    def work_at(self, image_size: int) -> ModelWork:
        if image_size not in self._works:
            self._works[image_size] = full_size_work(image_size, cache_dir=self.cache_dir, log=self.log)
        return self._works[image_size]

    def evaluate(self, workload: Workload) -> Prediction:
        if workload.precision not in self.device.peak:
            raise ValueError(f"{self.device.name} has no {workload.precision} "
                             f"(it has {', '.join(self.device.peak)})")
        return predict(workload, self.work_at(workload.image_size), self.device, self.efficiency)


def size(device_key: str, workload: Workload, target: Target, cache_dir: Path | None,
         log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> SizingReport:
    sizer = Sizer(device_key, cache_dir, log)
    prediction = sizer.evaluate(workload)
    holds = prediction.holds(target.rate_hz, target.worker_queue)
    return SizingReport(sizer.device, sizer.efficiency, sizer.calibration, prediction, target,
                        sizer.work_at(workload.image_size),
                        [] if holds else plan(workload, target, sizer.device, sizer.evaluate))


TABLE_GRID = dict(image_size=(1008, 840, 672, 504), views=(1, 3), keyframe_interval=(1, 5),
                  precision=("fp16", "int8"))


def sizing_table(workload: Workload, cache_dir: Path | None,
                 log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> str:
    """Thor and Orin side by side over input size x views x keyframe interval x precision, with
    the workload's prompts and tracked objects."""
    sizers = [Sizer(key, cache_dir, log) for key in DEVICES]
    names = [sizer.device.key.capitalize() for sizer in sizers]
    lines = [f"{workload.prompts} prompts, {workload.objects} tracked objects per view; ms per view-frame "
             "(amortized) and the largest frame-set rate held",
             "", "| px | views | keyframe interval | precision | "
             + " | ".join(f"{name} ms / view-frame | {name} max Hz" for name in names) + " |",
             "|---:|---:|---:|---|" + "---:|---:|" * len(sizers)]
    for image_size, views, interval, precision in itertools.product(*TABLE_GRID.values()):
        candidate = replace(workload, image_size=image_size, views=views, keyframe_interval=interval,
                            precision=precision)
        cells = []
        for sizer in sizers:
            prediction = sizer.evaluate(candidate)
            cells.append(f"{prediction.view_frame_ms:.0f} | {prediction.max_rate_hz:.2f}")
        lines.append(f"| {image_size} | {views} | {interval} | {precision} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
