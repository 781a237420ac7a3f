"""workcell_commission: write the commissioning file the segmentation node loads.

    workcell_commission --bag REC --cameras left,right --empty START:END --zone ZONE.yaml --out CELL.npz
        [--part-size 0.10]
    workcell_commission --out CELL.npz [--seed 7 --views 3 --size 640x480]     (a synthetic cell)

From a recording of your cell: calibration from each camera's `<camera>/camera_info` and the
bag's `/tf_static` (the chain from the zone's frame to each image's frame_id), the empty-cell
background from the images between START and END (seconds from the recording's start, the cell
empty with its fixtures in place), and the pick zone (ZONE.yaml: `{frame: workcell, box: {min:
[x, y, z], max: [x, y, z]}}` in metres) projected into each view. `--part-size` is the longest
side of the largest part in metres: a changed region three times a part's area is no part.
Such a cell has no colour table, so the classical backend names nothing there; the intrusion
monitor runs beside any backend (sam3, sam3_trt, sam3_small) all the same.

Without --bag: the synthetic cell of the demo, with its colour classifier trained on rendered
ground truth.
"""
from __future__ import annotations

import argparse
import sys
from contextlib import closing
from pathlib import Path

import numpy as np

from segmentation_node.bag_records import bag_start_ns, read_messages
from segmentation_node.calibration import CameraCalibration, StaticTransforms, Zone
from segmentation_node.image_codec import to_rgb
from segmentation_node.perception.classical import BackgroundModel, ColorClassifier
from segmentation_node.perception.commissioning import CameraCommissioning, Commissioning
from segmentation_node.perception.tracking import ViewGeometry
from segmentation_node.regression import recorded_images

TF_STATIC = "/tf_static"
BACKGROUND_FRAMES = 20  # at most this many images per camera, spread over the empty interval


class _EvenSample:
    """At most `limit` items spread evenly over a stream of unknown length: keep every
    `stride`-th, and when full, drop every other one and double the stride."""

    def __init__(self, limit: int):
        self.limit, self.stride, self.seen, self.items = limit, 1, 0, []

    def add(self, item) -> None:
        if self.seen % self.stride == 0:
            self.items.append(item)
            if len(self.items) > self.limit:
                self.items, self.stride = self.items[::2], self.stride * 2
        self.seen += 1


def _calibration_and_transforms(bag: Path, cameras: list[str]) -> tuple[dict[str, CameraCalibration],
                                                                         StaticTransforms, int]:
    """Each camera's first camera_info, every /tf_static transform, the recording's start (ns)."""
    topics = {f"/{camera}/camera_info": camera for camera in cameras}
    infos, transforms = {}, StaticTransforms()
    for _, topic, message in read_messages(bag, [*topics, TF_STATIC], "calibration comes from the recording"):
        if topic == TF_STATIC:
            transforms.add(message.transforms)
        else:
            infos.setdefault(topics[topic], message)
    return ({camera: CameraCalibration.from_camera_info(infos[camera], f"/{camera}/camera_info") for camera in cameras},
            transforms, bag_start_ns(bag))


def _empty_cell_images(bag: Path, cameras: list[str], calibration: dict[str, CameraCalibration],
                       first_ns: int, last_ns: int) -> tuple[dict[str, list[np.ndarray]], dict[str, str]]:
    """Per camera, up to BACKGROUND_FRAMES RGB images of the interval, and the images' frame_id."""
    samples = {camera: _EvenSample(BACKGROUND_FRAMES) for camera in cameras}
    frame_ids = {}
    with closing(recorded_images(bag, cameras)) as images:
        for timestamp, camera, message in images:
            if timestamp > last_ns:
                break
            if timestamp < first_ns:
                continue
            expected = (calibration[camera].height, calibration[camera].width)
            if (message.height, message.width) != expected:
                raise ValueError(f"/{camera}/image_raw is {message.width}x{message.height} but its camera_info "
                                 f"says {expected[1]}x{expected[0]}")
            try:
                samples[camera].add(to_rgb(message))
            except ValueError as error:
                raise ValueError(f"/{camera}/image_raw: {error}") from None
            frame_ids[camera] = message.header.frame_id
    return {camera: sample.items for camera, sample in samples.items()}, frame_ids


def commission_recording(bag: Path, cameras: list[str], empty_s: tuple[float, float], zone: Zone,
                         part_size_m: float = 0.10) -> Commissioning:
    """The cell as recorded; ValueError with the reason for a missing topic or transform, an
    empty interval, a size mismatch or a zone outside a view."""
    start_s, end_s = empty_s
    if not 0 <= start_s < end_s:
        raise ValueError(f"the empty interval {start_s:g}:{end_s:g} must be START:END seconds with 0 <= START < END")
    calibration, transforms, start_ns = _calibration_and_transforms(bag, cameras)
    images, frame_ids = _empty_cell_images(bag, cameras, calibration, start_ns + int(start_s * 1e9),
                                           start_ns + int(end_s * 1e9))
    commissioned = {}
    for camera in cameras:
        if not images[camera]:
            raise ValueError(f"no image of {camera} between {start_s:g} s and {end_s:g} s of the recording: "
                             "choose the interval when the cell was empty")
        world_from_camera = transforms.lookup(zone.frame, frame_ids[camera])
        calib = calibration[camera]
        zone_mask = calib.mask(zone.corners, world_from_camera)
        if not zone_mask.any():
            raise ValueError(f"the zone does not appear in {camera}'s view (check its frame and box)")
        depth = (np.linalg.inv(world_from_camera) @ np.append(zone.corners.mean(axis=0), 1.0))[2]
        part_area = calib.intrinsics[0, 0] * calib.intrinsics[1, 1] * part_size_m ** 2 / depth ** 2
        commissioned[camera] = CameraCommissioning(ViewGeometry(calib.intrinsics, world_from_camera),
                                                   BackgroundModel.fit(images[camera]), zone_mask,
                                                   max(int(part_area), 1))
    return Commissioning(commissioned, ColorClassifier.untrained(), (), ())


def _interval(text: str) -> tuple[float, float]:
    try:
        start, end = (float(value) for value in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:END in seconds, got '{text}'") from None
    return start, end


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workcell_commission", description=__doc__.splitlines()[0],
                                     epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the commissioning file to write (.npz)")
    recording = parser.add_argument_group("a cell from a recording")
    recording.add_argument("--bag", type=Path, help="recording with <camera>/image_raw, <camera>/camera_info, /tf_static")
    recording.add_argument("--cameras", help="comma-separated camera names")
    recording.add_argument("--empty", type=_interval, help="START:END seconds from the start: the cell empty")
    recording.add_argument("--zone", type=Path, help="pick zone: {frame: F, box: {min: [x,y,z], max: [x,y,z]}}")
    recording.add_argument("--part-size", type=float, default=0.10, help="largest part's longest side, metres")
    synthetic = parser.add_argument_group("the synthetic cell")
    synthetic.add_argument("--seed", type=int, default=7)
    synthetic.add_argument("--views", type=int, default=3)
    synthetic.add_argument("--size", default="640x480", help="WIDTHxHEIGHT")
    args = parser.parse_args(argv)
    if args.bag is None:
        from segmentation_node.synthetic.classical_setup import commission_synthetic

        width, height = (int(v) for v in args.size.split("x"))
        commission_synthetic(args.seed, args.views, width, height).save(args.out)
        print(f"commissioning (synthetic cell, seed {args.seed}): {args.out}")
        return 0
    if not (args.cameras and args.empty and args.zone):
        parser.error("--bag needs --cameras, --empty and --zone")
    if args.part_size <= 0:
        parser.error("--part-size must be > 0 metres")
    cameras = [camera.strip() for camera in args.cameras.split(",") if camera.strip()]
    try:
        cell = commission_recording(args.bag, cameras, args.empty, Zone.load(args.zone), args.part_size)
        cell.save(args.out)
    except (FileNotFoundError, ValueError, OSError) as error:
        print(f"workcell_commission: {error}", file=sys.stderr)
        return 2
    for camera, setup in cell.cameras.items():
        print(f"{camera}: {setup.zone.shape[1]}x{setup.zone.shape[0]}, pick zone {np.count_nonzero(setup.zone)} px, "
              f"part at most {setup.max_part_area} px")
    print(f"commissioning (no colour table: the classical backend names nothing; the intrusion monitor runs "
          f"beside any backend): {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
