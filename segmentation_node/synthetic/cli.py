"""workcell_synth: generate a synthetic multi-view workcell clip and export COCO and a rosbag2."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from segmentation_node.synthetic.export import BAG_FORMATS, export_clip
from segmentation_node.synthetic.scene import ClipConfig, generate_clip


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(value) for value in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 640x480, got {text!r}") from None
    return width, height


def build_parser() -> argparse.ArgumentParser:
    defaults = ClipConfig()
    parser = argparse.ArgumentParser(
        prog="workcell_synth",
        description="Render a seeded multi-view workcell clip (bin, parts incl. defective ones, fixtures, "
                    "a tool, a hand entering and leaving, picks) with exact ground truth, and export it "
                    "as COCO (images + RLE) and a rosbag2 recording.")
    parser.add_argument("--out", type=Path, required=True, help="output directory (coco/ and bag/ inside)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--views", type=int, default=defaults.views, help="cameras, 2-4")
    parser.add_argument("--size", type=_size, default=(defaults.width, defaults.height), help="WIDTHxHEIGHT")
    parser.add_argument("--frames", type=int, default=defaults.frames)
    parser.add_argument("--rate", type=float, default=defaults.rate_hz, help="frame sets per second")
    parser.add_argument("--parts", type=int, default=defaults.parts)
    parser.add_argument("--picks", type=int, default=defaults.picks, help="parts removed during the clip")
    parser.add_argument("--no-hand", action="store_true", help="no hand enters the cell")
    parser.add_argument("--no-stacking", action="store_true", help="parts never rest on each other")
    parser.add_argument("--bag-format", choices=[*BAG_FORMATS, "none"], default="mcap")
    parser.add_argument("--no-coco", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = ClipConfig(seed=args.seed, views=args.views, width=args.size[0], height=args.size[1],
                            frames=args.frames, rate_hz=args.rate, parts=args.parts, picks=args.picks,
                            hand=not args.no_hand, stacking=not args.no_stacking)
        clip = generate_clip(config)
        written = export_clip(clip, args.out, coco=not args.no_coco,
                              bag_format=None if args.bag_format == "none" else args.bag_format,
                              progress=not args.quiet)
    except (ValueError, FileExistsError) as error:
        print(f"workcell_synth: {error}", file=sys.stderr)
        return 2
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
