#!/usr/bin/env python3
"""Benchmark the segmentation node over real DDS: per-stage timings (the node's own, read from
/diagnostics), the non-model overhead against a memcpy of the same image bytes, end-to-end
latency (source stamp -> result received) at a camera rate, and memory over a long stream.

    scripts/bench_node.py                              # 2 and 4 views at 1280x720, 15 Hz, 20 s each
    scripts/bench_node.py --views 3 --size 640x480 --seconds 600 --memory   # 10-minute memory run

With the operator_intent node running too, the intent alternates every 2 s and the time from the
accepted answer to the first frame set carrying the new intent is measured.

Backend: the classical CPU backend on a commissioned synthetic cell by default; `--backend
sam3_small` measures the node's work around the small SAM3 model the same way (the model stage
itself is benchmarked by scripts/bench_sam3_backends.py). Prints markdown tables and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from std_msgs.msg import Header

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from segmentation_node.benchmarking import cpu_name, memcpy_ms  # noqa: E402
from segmentation_node.contract import SEGMENTATION_NODE  # noqa: E402
from segmentation_node.ros.camera_rig import CameraRig  # noqa: E402
from segmentation_node.ros.messages import endpoint_qos, image_message, nanoseconds  # noqa: E402
from segmentation_node.synthetic.classical_setup import commission, train_classifier  # noqa: E402
from segmentation_node.synthetic.render import render_frame_set  # noqa: E402
from segmentation_node.synthetic.scene import ClipConfig, generate_clip  # noqa: E402
from workcell_segmentation.msg import FrameSetResult, OperatorIntent  # noqa: E402
from workcell_segmentation.srv import SetIntent  # noqa: E402

FRAME_SETS = 8  # rendered once, cycled


class BenchClient(Node):
    """The cameras, the intent switches, and what comes back (results, diagnostics)."""

    def __init__(self, cameras: list[str]):
        super().__init__("bench_cameras")
        self.rig = CameraRig(self, cameras)
        self.latencies_ms: list[float] = []
        self.diagnostics: dict[str, str] = {}
        self.intent_client = self.create_client(SetIntent, "set_intent")
        self.intent_future = None
        self.intent_answered: tuple[int, float] | None = None  # (sequence, monotonic time of the answer)
        self.intent_ms: list[float] = []
        self.create_subscription(FrameSetResult, "frame_set", self._on_result, endpoint_qos(SEGMENTATION_NODE, "frame_set"))
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics,
                                 endpoint_qos(SEGMENTATION_NODE, "/diagnostics"))

    def _on_result(self, message: FrameSetResult) -> None:
        if message.inference_ms > 0:  # a processed frame set, not a watchdog report
            self.latencies_ms.append((time.time_ns() - nanoseconds(message.header.stamp)) / 1e6)
        if self.intent_answered and message.intent_sequence == self.intent_answered[0]:
            self.intent_ms.append((time.monotonic() - self.intent_answered[1]) * 1000.0)
            self.intent_answered = None

    def switch_intent(self, text: str) -> None:
        """Ask for a new intent without blocking the camera loop; `poll_intent` takes the answer."""
        if self.intent_future is None and self.intent_answered is None:
            self.intent_future = self.intent_client.call_async(
                SetIntent.Request(intent=OperatorIntent(operator_id="bench", text=text)))

    def poll_intent(self) -> None:
        if self.intent_future is not None and self.intent_future.done():
            answer = self.intent_future.result()
            self.intent_future = None
            if answer.accepted:
                self.intent_answered = (answer.active.sequence, time.monotonic())

    def _on_diagnostics(self, message: DiagnosticArray) -> None:
        for status in message.status:
            if status.name.endswith(": model"):
                self.diagnostics = {v.key: v.value for v in status.values}


def build_cell(views: int, width: int, height: int, folder: Path):
    config = ClipConfig(seed=7, views=views, width=width, height=height, frames=FRAME_SETS, stacking=False)
    clip = generate_clip(config)
    commission(clip, train_classifier(replace(config, frames=4), seeds=(101,), frames_per_clip=2)).save(
        folder / "cell.npz")
    return [camera.name for camera in clip.cameras], [render_frame_set(clip, i) for i in range(FRAME_SETS)]


def run(views: int, width: int, height: int, rate_hz: float, seconds: float, memory: bool, backend: str) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="bench_node_"))
    cameras, renders = build_cell(views, width, height, folder)
    node = subprocess.Popen([sys.executable, "-m", "segmentation_node.ros.segmentation", "--ros-args",
                             "-p", f"commissioning_file:={folder / 'cell.npz'}", "-p", f"cameras:=[{','.join(cameras)}]",
                             "-p", f"backend:={backend}"],
                            cwd=REPO, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    operator = subprocess.Popen([sys.executable, "-m", "segmentation_node.ros.operator_node", "--ros-args",
                                 "-p", f"state_file:={folder / 'gate.json'}", "-p", f"transition_log:={folder / 'gate.log'}"],
                                cwd=REPO, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    rclpy.init()
    rig = BenchClient(cameras)
    memory_samples = []
    try:
        deadline = time.monotonic() + 120
        while not rig.rig.connected():
            if time.monotonic() > deadline or node.poll() is not None:
                raise RuntimeError("the segmentation node did not come up")
            rclpy.spin_once(rig, timeout_sec=0.05)
        messages = [[image_message(Header(frame_id=r.camera.frame_id), r.image, "rgb8") for r in frame_set]
                    for frame_set in renders]
        process = psutil.Process(node.pid)
        started = time.monotonic()
        sent = 0
        next_sample = started
        while time.monotonic() < started + seconds:
            rig.rig.publish_now(dict(zip(cameras, messages[sent % FRAME_SETS])))
            sent += 1
            rig.poll_intent()
            if sent % int(2 * rate_hz) == 0:
                rig.switch_intent(("pick part_a", "pick part_b")[sent // int(2 * rate_hz) % 2])
            if memory and time.monotonic() >= next_sample:
                memory_samples.append((time.monotonic() - started, process.memory_info().rss / 2**20))
                next_sample += 10.0
            due = started + sent / rate_hz
            while time.monotonic() < due:
                rclpy.spin_once(rig, timeout_sec=max(0.0, min(0.005, due - time.monotonic())))
        settle = time.monotonic() + 2.5  # the last results and one diagnostics period
        while time.monotonic() < settle:
            rclpy.spin_once(rig, timeout_sec=0.05)
    finally:
        rig.destroy_node()
        rclpy.try_shutdown()
        for process in (node, operator):
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:  # a node starved by the load; the numbers are taken
                process.kill()
                process.wait()
    return report(views, width, height, rate_hz, seconds, sent, rig, memcpy_ms((views, height, width, 3)),
                  memory_samples, backend)


def report(views, width, height, rate_hz, seconds, sent, rig, copy_ms, memory_samples, backend) -> dict:
    """Prints the tables; returns the row of the JSON line."""
    stages = {key.removesuffix(" p50/p95 ms"): [float(v) for v in value.split(" / ")]
              for key, value in rig.diagnostics.items() if key.endswith("p50/p95 ms")}
    print(f"\n### {backend}, {views} views {width}x{height}, cameras at {rate_hz:g} Hz for {seconds:g} s "
          f"({cpu_name()})\n")
    print("| stage (node's own timing) | p50 ms | p95 ms |\n|---|---|---|")
    for stage, (p50, p95) in stages.items():
        print(f"| {stage} | {p50:.2f} | {p95:.2f} |")
    per_set = {stage: p50 * (views if stage.endswith("(per image)") else 1) for stage, (p50, _) in stages.items()}
    overhead = sum(value for stage, value in per_set.items() if stage != "backend")
    latencies = np.array(rig.latencies_ms) if rig.latencies_ms else np.array([np.nan])
    print(f"| **non-model overhead per frame set (p50 sum)** | {overhead:.2f} | |")
    print(f"| memcpy of the same {views}x{width}x{height}x3 bytes | {copy_ms:.2f} | |")
    print(f"\n- non-model overhead / memcpy: **{overhead / copy_ms:.1f}x**")
    print(f"- end-to-end latency (source stamp -> result received): p50 {np.percentile(latencies, 50):.0f} ms, "
          f"p95 {np.percentile(latencies, 95):.0f} ms")
    print(f"- frame sets: {sent} offered, {len(rig.latencies_ms)} results "
          f"({len(rig.latencies_ms) / seconds:.1f}/s; the rest dropped oldest-first by design)")
    if rig.intent_ms:
        print(f"- intent accepted -> first frame set with the new intent: p50 {np.percentile(rig.intent_ms, 50):.0f} ms, "
              f"p95 {np.percentile(rig.intent_ms, 95):.0f} ms ({len(rig.intent_ms)} switches)")
    if memory_samples:
        rss = np.array([mb for _, mb in memory_samples])
        minutes = np.array([s / 60 for s, _ in memory_samples])
        half = len(rss) // 2
        slope = np.polyfit(minutes[half:], rss[half:], 1)[0] if half >= 2 else float("nan")
        print(f"- node RSS over {seconds / 60:.1f} min: start {rss[0]:.0f} MiB, min {rss.min():.0f}, "
              f"max {rss.max():.0f}, end {rss[-1]:.0f}; second-half slope {slope:+.2f} MiB/min")
    return {"backend": backend, "views": views, "width": width, "height": height, "rate_hz": rate_hz,
            "seconds": seconds, "offered": sent, "processed": len(rig.latencies_ms),
            "processed_share": len(rig.latencies_ms) / sent if sent else 0.0,
            "latency_ms_p50": float(np.percentile(latencies, 50)), "latency_ms_p95": float(np.percentile(latencies, 95)),
            "stages_ms_p50_p95": stages, "overhead_ms_p50": overhead, "memcpy_ms": copy_ms,
            "overhead_per_memcpy": overhead / copy_ms}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--rate", type=float, default=15.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--memory", action="store_true", help="sample the node's RSS every 10 s")
    parser.add_argument("--backend", default="classical", help="the node's backend parameter (e.g. sam3_small)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    rows = [run(views, width, height, args.rate, args.seconds, args.memory, args.backend) for views in args.views]
    print("\n" + json.dumps({"benchmark": "bench_node", "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
