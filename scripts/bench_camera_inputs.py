#!/usr/bin/env python3
"""Cost of turning one camera frame into the model's RGB, per encoding and transport, as the
node's worker does it (image_codec: raw table, compressed decode, the 16-bit rules), against a
memcpy of the RGB bytes measured in the same run. Prints a markdown table and one JSON line;
asserts nothing."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from segmentation_node.benchmarking import cpu_name, median_ms, memcpy_ms  # noqa: E402
from segmentation_node.image_codec import SUPPORTED_ENCODINGS, SixteenBitRule, decode_compressed, to_rgb  # noqa: E402
from segmentation_node.synthetic.render import render_frame_set  # noqa: E402
from segmentation_node.synthetic.scene import ClipConfig, generate_clip  # noqa: E402

# Bytes per pixel of each raw encoding (conversion cost does not depend on the pixel values).
_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "yuv422": 2, "yuv422_yuy2": 2}


def measure(width: int, height: int, repeats: int) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for encoding in SUPPORTED_ENCODINGS:
        depth = 2 if encoding.endswith("16") else 1
        step = width * _CHANNELS.get(encoding, 1) * depth
        message = SimpleNamespace(height=height, width=width, encoding=encoding, is_bigendian=0, step=step,
                                  data=rng.integers(0, 255, step * height, dtype=np.uint8).tobytes())
        rules = ("shift:8", "range") if depth == 2 else ("shift:8",)
        for rule in rules:
            to_8bit = SixteenBitRule(rule)
            name = f"{encoding} ({rule})" if depth == 2 else encoding
            rows.append({"input": name, "ms": median_ms(lambda: to_rgb(message, to_8bit), repeats)})
    # Compressed: a rendered workcell frame (real image statistics), as image_transport sends it.
    clip = generate_clip(ClipConfig(seed=7, views=2, width=width, height=height, frames=1))
    bgr = render_frame_set(clip, 0)[0].image[..., ::-1]
    for extension, options, label in ((".jpg", [cv2.IMWRITE_JPEG_QUALITY, 80], "compressed jpeg (quality 80)"),
                                      (".png", [cv2.IMWRITE_PNG_COMPRESSION, 1], "compressed png (level 1)")):
        data = cv2.imencode(extension, bgr, options)[1].tobytes()
        message = SimpleNamespace(format=extension.lstrip("."), data=data)
        rows.append({"input": label, "ms": median_ms(lambda: decode_compressed(message), repeats),
                     "bytes": len(data)})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    rows = measure(width, height, args.repeats)
    copy = memcpy_ms((height, width, 3))
    for row in rows:
        row["per_memcpy"] = row["ms"] / copy
    print(f"one {width}x{height} frame to RGB, median of {args.repeats} "
          f"({cpu_name()}); memcpy of the RGB bytes "
          f"{copy:.3f} ms\n")
    print("| input | ms | / memcpy |")
    print("|---|---|---|")
    for row in rows:
        size = f" ({row['bytes'] / 1024:.0f} KiB)" if "bytes" in row else ""
        print(f"| {row['input']}{size} | {row['ms']:.2f} | {row['per_memcpy']:.0f}x |")
    print("\n" + json.dumps({"benchmark": "bench_camera_inputs", "width": width, "height": height,
                             "memcpy_ms": copy, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
