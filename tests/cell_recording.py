"""A recording of a cell this project has never seen, written here with its own geometry and
drawing code (not the synthetic exporter): two cameras, bgr8, stamps a few ms apart, camera_info,
a /tf_static chain workcell -> cell_base -> <camera>_link -> <camera>_optical, an empty
interval, then parts in the bin, then an arm reaching in from the side."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

CAMERAS = ("left", "right")
ZONE_MIN, ZONE_MAX = (-0.20, -0.15, 0.0), (0.20, 0.15, 0.12)  # the bin, in the workcell frame
ZONE_YAML = f"frame: workcell\nbox: {{min: {list(ZONE_MIN)}, max: {list(ZONE_MAX)}}}\n"


@dataclass(frozen=True)
class Timeline:
    """Frame indices at `rate_hz`: empty cell, then parts, then the arm (moving in)."""

    empty: int = 6
    parts: int = 5
    arm: int = 8
    rate_hz: float = 10.0
    camera_offset_ms: tuple[int, ...] = (0, 4)  # the second camera's stamps trail by 4 ms

    @property
    def frames(self) -> int:
        return self.empty + self.parts + self.arm

    def arm_tip_x(self, index: int) -> float | None:
        """The arm's tip in workcell x (it comes in from +x), None before it appears."""
        step = index - self.empty - self.parts
        return None if step < 0 else 0.55 - 0.07 * step


@dataclass
class Truth:
    arm_in_view: dict[int, bool] = field(default_factory=dict)   # frame index -> any camera sees it
    arm_in_zone: dict[int, bool] = field(default_factory=dict)   # frame index -> tip over the bin


def _look_at(eye, target) -> np.ndarray:
    """parent_from_link of a camera body (x forward, y left, z up: REP 103) looking at `target`."""
    forward = np.subtract(target, eye) / np.linalg.norm(np.subtract(target, eye))
    left = np.cross([0.0, 0.0, 1.0], forward)
    left /= np.linalg.norm(left)
    up = np.cross(forward, left)
    pose = np.eye(4)
    pose[:3, :3] = np.column_stack([forward, left, up])
    pose[:3, 3] = eye
    return pose


LINK_FROM_OPTICAL = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]], float)
WORKCELL_FROM_BASE = np.array([[0, -1, 0, 0.05], [1, 0, 0, -0.02], [0, 0, 1, 0.0], [0, 0, 0, 1]], float)


def camera_poses() -> dict[str, dict[str, np.ndarray]]:
    """Per camera: base_from_link, and workcell_from_optical (what commissioning must find)."""
    base_from_workcell = np.linalg.inv(WORKCELL_FROM_BASE)
    eyes = {"left": (-0.35, -0.45, 0.85), "right": (0.40, 0.35, 0.80)}
    poses = {}
    for name, eye in eyes.items():
        workcell_from_link = _look_at(eye, (0.0, 0.0, 0.03))
        poses[name] = {"base_from_link": base_from_workcell @ workcell_from_link,
                       "workcell_from_optical": workcell_from_link @ LINK_FROM_OPTICAL}
    return poses


def intrinsics(width: int, height: int) -> np.ndarray:
    focal = 0.9 * width
    return np.array([[focal, 0, width / 2 - 3.5], [0, focal * 1.01, height / 2 + 2.0], [0, 0, 1]])


def _quaternion(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w), largest-component method."""
    m = rotation
    trace = np.trace(m)
    if trace > 0:
        s = 2 * np.sqrt(trace + 1)
        return (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4
    i = int(np.argmax(np.diag(m)))
    j, k = (i + 1) % 3, (i + 2) % 3
    s = 2 * np.sqrt(1 + m[i, i] - m[j, j] - m[k, k])
    q = [0.0, 0.0, 0.0, 0.0]
    q[i], q[j], q[k], q[3] = s / 4, (m[j, i] + m[i, j]) / s, (m[k, i] + m[i, k]) / s, (m[k, j] - m[j, k]) / s
    return tuple(q)


def _pixels(points: np.ndarray, k: np.ndarray, workcell_from_optical: np.ndarray) -> np.ndarray:
    optical = (np.linalg.inv(workcell_from_optical) @ np.c_[points, np.ones(len(points))].T)[:3]
    return (k @ optical)[:2].T / optical[2][:, None]


def _fill(image, points, k, pose, colour) -> np.ndarray:
    """Fill the convex hull of the projected points; the filled pixels."""
    hull = cv2.convexHull(np.round(_pixels(np.asarray(points, float), k, pose)).astype(np.int32))
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, hull, 1)
    image[mask.astype(bool)] = colour
    return mask.astype(bool)


def _box(low, high) -> list:
    return [(x, y, z) for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])]


PARTS = ((-0.08, -0.05), (0.06, 0.04), (0.10, -0.07))  # disc centres on the bin floor


def draw(camera: str, index: int, timeline: Timeline, width: int, height: int,
         texture: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """BGR image of one camera at one frame; whether the arm is in this view."""
    k, pose = intrinsics(width, height), camera_poses()[camera]["workcell_from_optical"]
    image = np.full((height, width, 3), 30.0)
    table = _fill(image, _box((-0.6, -0.6, -0.01), (0.6, 0.6, 0.0)), k, pose, (90, 95, 100))
    image[table] += texture[table]  # wood grain: a real table is not one flat grey
    _fill(image, _box(ZONE_MIN, (ZONE_MAX[0], ZONE_MAX[1], 0.005)), k, pose, (40, 120, 40))  # bin floor
    for x, y, z in ((-0.24, -0.19, 0), (0.24, 0.19, 0)):  # fixtures at two bin corners
        _fill(image, _box((x - 0.03, y - 0.03, z), (x + 0.03, y + 0.03, 0.08)), k, pose, (0, 200, 230))
    if index >= timeline.empty:
        for cx, cy in PARTS:
            ring = [(cx + 0.03 * np.cos(a), cy + 0.03 * np.sin(a), h) for a in np.linspace(0, 2 * np.pi, 24)
                    for h in (0.005, 0.02)]
            _fill(image, ring, k, pose, (200, 70, 30))
    in_view = False
    tip = timeline.arm_tip_x(index)
    if tip is not None:
        arm = _fill(image, _box((tip, -0.04, 0.10), (1.2, 0.04, 0.16)), k, pose, (120, 160, 225))
        in_view = bool(arm.any())
    noise = rng.normal(0, 1.5, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8), in_view


def write_cell_recording(out: Path, timeline: Timeline = Timeline(), width: int = 1280, height: int = 720,
                         info_size: tuple[int, int] | None = None) -> Truth:
    """Write the recording (MCAP) to `out`; `info_size` (w, h) makes camera_info lie about the size."""
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    msg = typestore.types
    rng = np.random.default_rng(5)
    grain = cv2.GaussianBlur(rng.normal(0, 1, (height, width)), (0, 0), 6)
    texture = np.repeat((grain * 60 / grain.std())[..., None], 3, axis=2)
    poses = camera_poses()
    truth = Truth()
    start_ns = 1_700_000_000_000_000_000

    def header(stamp_ns, frame_id):
        stamp = msg["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
        return msg["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)

    def transform(stamp_ns, parent, child, pose):
        x, y, z, w = _quaternion(pose[:3, :3])
        t = pose[:3, 3]
        return msg["geometry_msgs/msg/TransformStamped"](
            header=header(stamp_ns, parent), child_frame_id=child,
            transform=msg["geometry_msgs/msg/Transform"](
                translation=msg["geometry_msgs/msg/Vector3"](x=t[0], y=t[1], z=t[2]),
                rotation=msg["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w)))

    with Writer(out, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        tf = writer.add_connection("/tf_static", "tf2_msgs/msg/TFMessage", typestore=typestore)
        images = {c: writer.add_connection(f"/{c}/image_raw", "sensor_msgs/msg/Image", typestore=typestore)
                  for c in CAMERAS}
        infos = {c: writer.add_connection(f"/{c}/camera_info", "sensor_msgs/msg/CameraInfo", typestore=typestore)
                 for c in CAMERAS}
        chain = [transform(start_ns, "workcell", "cell_base", WORKCELL_FROM_BASE)]
        for camera in CAMERAS:
            chain.append(transform(start_ns, "cell_base", f"{camera}_link", poses[camera]["base_from_link"]))
            chain.append(transform(start_ns, f"{camera}_link", f"{camera}_optical", LINK_FROM_OPTICAL))
        writer.write(tf, start_ns, typestore.serialize_cdr(msg["tf2_msgs/msg/TFMessage"](transforms=chain),
                                                           "tf2_msgs/msg/TFMessage"))
        for index in range(timeline.frames):
            frame_ns = start_ns + 10_000_000 + int(index * 1e9 / timeline.rate_hz)
            seen = False
            for camera, offset_ms in zip(CAMERAS, timeline.camera_offset_ms):
                stamp_ns = frame_ns + offset_ms * 1_000_000
                image, in_view = draw(camera, index, timeline, width, height, texture, rng)
                seen |= in_view
                k = intrinsics(width, height)
                info_w, info_h = info_size or (width, height)
                info = msg["sensor_msgs/msg/CameraInfo"](
                    header=header(stamp_ns, f"{camera}_optical"), height=info_h, width=info_w,
                    distortion_model="plumb_bob", d=np.zeros(5), k=k.ravel(), r=np.eye(3).ravel(),
                    p=np.c_[k, np.zeros(3)].ravel(), binning_x=0, binning_y=0,
                    roi=msg["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                                do_rectify=False))
                writer.write(infos[camera], stamp_ns + 500_000,
                             typestore.serialize_cdr(info, "sensor_msgs/msg/CameraInfo"))
                picture = msg["sensor_msgs/msg/Image"](
                    header=header(stamp_ns, f"{camera}_optical"), height=height, width=width, encoding="bgr8",
                    is_bigendian=0, step=width * 3, data=image.reshape(-1))
                writer.write(images[camera], stamp_ns + 1_000_000,
                             typestore.serialize_cdr(picture, "sensor_msgs/msg/Image"))
            tip = timeline.arm_tip_x(index)
            truth.arm_in_view[index] = seen
            truth.arm_in_zone[index] = tip is not None and tip < ZONE_MAX[0]
    return truth
