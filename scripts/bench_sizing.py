#!/usr/bin/env python3
"""Checks workcell_sizing's model where this machine can. The small SAM3 model's stages are
predicted on this CPU (fp32 GEMM rate and copy bandwidth measured in this run, the efficiency
calibrated on its backbone, as `workcell_sizing --profile cpu` does) and measured; the other
stages' predicted / measured ratio is the check. The ViT trunk's count is compared with its
matmuls from the dimensions (small model; with --full the full-size trunk at 1008 and 924 px).
Prints a markdown table and one JSON line. Random weights: timings and counts only."""
from __future__ import annotations

import argparse
import json

import torch

from segmentation_node.sam3_backend.builder import build_full_size_sam3_random, build_small_sam3, resize_input
from segmentation_node.sam3_backend.work_count import trunk_flops, vit_matmul_flops
from segmentation_node.sizing import PRECISION_BYTES, STAGES, calibrate_this_cpu, stage_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--full", action="store_true", help="also count the full-size trunk (~15 s)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cpu = calibrate_this_cpu(args.image_size, args.repeats, log=lambda line: None)
    device, efficiency, work, measured = cpu.device, cpu.efficiency, cpu.work, cpu.measured_ms
    predicted = {stage: stage_ms(work.stages[stage], 1, device, "fp32", efficiency) for stage in STAGES}

    print(f"{device.name}, {args.threads} torch threads: fp32 GEMM {device.peak['fp32'] / 1e9:.0f} GFLOP/s, "
          f"copy {device.bandwidth / 1e9:.1f} GB/s; small SAM3 model at {work.image_size} px, "
          f"efficiency {efficiency:.3f} (calibrated on its backbone)\n")
    print("| stage (one unit) | GFLOP | MB | predicted ms | measured ms | predicted / measured |")
    print("|---|---:|---:|---:|---:|---:|")
    for stage in STAGES:
        flops, elements = work.stages[stage].batch(1)
        print(f"| {stage} | {flops / 1e9:.2f} | {elements * PRECISION_BYTES['fp32'] / 1e6:.1f} | "
              f"{predicted[stage]:.1f} | {measured[stage]:.1f} | {predicted[stage] / measured[stage]:.2f} |")

    trunks = [("small", args.image_size, trunk_flops(build_small_sam3(image_size=args.image_size)),
               vit_matmul_flops(args.image_size, 192, 4, args.image_size // 14 // 2, (1, 3)))]
    if args.full:
        full = build_full_size_sam3_random(device="cpu")
        for image_size in (1008, 924):
            resize_input(full, image_size)
            trunks.append(("full", image_size, trunk_flops(full),
                           vit_matmul_flops(image_size, 1024, 32, 24, (7, 15, 23, 31))))
    print("\n| ViT trunk | px | counted GFLOP | from its dimensions | equal |")
    print("|---|---:|---:|---:|---|")
    for name, image_size, counted, formula in trunks:
        print(f"| {name} | {image_size} | {counted / 1e9:.2f} | {formula / 1e9:.2f} | {counted == formula} |")
    print(json.dumps({
        "device": device.name, "threads": args.threads, "gemm_gflops": round(device.peak["fp32"] / 1e9, 1),
        "copy_gbps": round(device.bandwidth / 1e9, 2), "efficiency": round(efficiency, 4),
        "stages": {stage: {"predicted_ms": round(predicted[stage], 2), "measured_ms": round(measured[stage], 2),
                           "ratio": round(predicted[stage] / measured[stage], 3)} for stage in STAGES},
        "trunks": [{"model": name, "image_size": size, "counted": counted, "formula": formula}
                   for name, size, counted, formula in trunks]}))


if __name__ == "__main__":
    main()
