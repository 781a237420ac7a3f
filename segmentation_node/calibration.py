"""Calibration as a robot publishes it: `sensor_msgs/CameraInfo` (intrinsics, distortion, size)
and the static transform tree (`/tf_static`), turned into what the pipeline uses: a view's
intrinsics and its optical frame's pose in the workcell frame, and a 3-D zone as a pixel mask.

ROS-free: the fields are read by name, so rclpy messages and rosbags' deserialized ones both work.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
import yaml

# Distortion models OpenCV's projection implements (coefficients in CameraInfo order).
OPENCV_DISTORTION_MODELS = ("plumb_bob", "rational_polynomial")


@dataclass(frozen=True, eq=False)
class CameraCalibration:
    intrinsics: np.ndarray   # 3 x 3
    distortion: np.ndarray   # OpenCV order; empty: none
    width: int
    height: int

    @classmethod
    def from_camera_info(cls, info, where: str) -> "CameraCalibration":
        """ValueError naming `where` for an uncalibrated camera or an unsupported distortion model."""
        intrinsics = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
        if intrinsics[0, 0] <= 0 or intrinsics[1, 1] <= 0:
            raise ValueError(f"{where}: the camera is not calibrated (focal length {intrinsics[0, 0]:g}, "
                             f"{intrinsics[1, 1]:g} in K)")
        distortion = np.asarray(info.d, dtype=np.float64)
        if np.any(distortion) and info.distortion_model not in OPENCV_DISTORTION_MODELS:
            raise ValueError(f"{where}: distortion model '{info.distortion_model}' is not supported "
                             f"(use {' or '.join(OPENCV_DISTORTION_MODELS)}, or rectified images)")
        if int(info.width) <= 0 or int(info.height) <= 0:
            raise ValueError(f"{where}: no image size ({info.width}x{info.height})")
        return cls(intrinsics, distortion if np.any(distortion) else np.zeros(0), int(info.width), int(info.height))

    def project(self, points_world: np.ndarray, world_from_camera: np.ndarray) -> np.ndarray:
        """Pixels of world points (optical frame: x right, y down, z forward), with distortion."""
        camera_from_world = np.linalg.inv(world_from_camera)
        local = np.atleast_2d(points_world) @ camera_from_world[:3, :3].T + camera_from_world[:3, 3]
        if (local[:, 2] <= 0).any():
            raise ValueError("a zone corner is behind the camera; the zone cannot be projected")
        pixels, _ = cv2.projectPoints(local, np.zeros(3), np.zeros(3), self.intrinsics,
                                      self.distortion if self.distortion.size else None)
        return pixels.reshape(-1, 2)

    def mask(self, corners_world: np.ndarray, world_from_camera: np.ndarray) -> np.ndarray:
        """Pixels covered by the convex hull of the projected corners (height x width bool)."""
        hull = cv2.convexHull(np.round(self.project(corners_world, world_from_camera)).astype(np.int32))
        mask = np.zeros((self.height, self.width), np.uint8)
        cv2.fillConvexPoly(mask, hull, 1)
        return mask.view(bool)


def _rotation(x: float, y: float, z: float, w: float) -> np.ndarray:
    norm = np.sqrt(x * x + y * y + z * z + w * w)
    if norm < 1e-9:
        raise ValueError("a transform's rotation is a zero quaternion")
    x, y, z, w = x / norm, y / norm, z / norm, w / norm
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


class StaticTransforms:
    """The static transform tree: parent_from_child per edge, looked up along any chain."""

    def __init__(self):
        self._edges: dict[str, dict[str, np.ndarray]] = {}

    def add(self, transforms: Iterable) -> None:
        """geometry_msgs/TransformStamped items (a TFMessage's `transforms`)."""
        for item in transforms:
            parent, child = item.header.frame_id.lstrip("/"), item.child_frame_id.lstrip("/")
            t, r = item.transform.translation, item.transform.rotation
            pose = np.eye(4)
            pose[:3, :3] = _rotation(r.x, r.y, r.z, r.w)
            pose[:3, 3] = (t.x, t.y, t.z)
            self._edges.setdefault(parent, {})[child] = pose
            self._edges.setdefault(child, {})[parent] = np.linalg.inv(pose)

    @property
    def frames(self) -> list[str]:
        return sorted(self._edges)

    def lookup(self, target: str, source: str) -> np.ndarray:
        """target_from_source (4 x 4); ValueError when no chain of static transforms joins them."""
        target, source = target.lstrip("/"), source.lstrip("/")
        if target == source:
            return np.eye(4)
        reached = {target: np.eye(4)}  # frame -> target_from_frame, breadth first from the target
        queue = deque([target])
        while queue:
            frame = queue.popleft()
            for neighbour, frame_from_neighbour in self._edges.get(frame, {}).items():
                if neighbour not in reached:
                    reached[neighbour] = reached[frame] @ frame_from_neighbour
                    if neighbour == source:
                        return reached[neighbour]
                    queue.append(neighbour)
        raise ValueError(f"no chain of static transforms from '{target}' to '{source}' "
                         f"(frames in /tf_static: {', '.join(self.frames) or 'none'})")


@dataclass(frozen=True, eq=False)
class Zone:
    """An axis-aligned box in `frame` (metres): the pick zone, e.g. the bin floor to rim."""

    frame: str
    minimum: np.ndarray
    maximum: np.ndarray

    @property
    def corners(self) -> np.ndarray:
        return np.array([[x, y, z] for x in (self.minimum[0], self.maximum[0])
                         for y in (self.minimum[1], self.maximum[1]) for z in (self.minimum[2], self.maximum[2])])

    @classmethod
    def load(cls, path: Path) -> "Zone":
        """`{frame: workcell, box: {min: [x, y, z], max: [x, y, z]}}`; ValueError on anything else."""
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"zone file not found: {path}") from None
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: not YAML: {error}") from None
        try:
            frame, box = str(data["frame"]), data["box"]
            minimum, maximum = (np.asarray(box[key], dtype=np.float64) for key in ("min", "max"))
        except (TypeError, KeyError, ValueError) as error:
            raise ValueError(f"{path}: expected {{frame: F, box: {{min: [x, y, z], max: [x, y, z]}}}} "
                             f"in metres ({type(error).__name__}: {error})") from None
        if minimum.shape != (3,) or maximum.shape != (3,) or not np.all(maximum > minimum):
            raise ValueError(f"{path}: box min {minimum.tolist()} must be below max {maximum.tolist()} "
                             "on every axis (three numbers each)")
        return cls(frame, minimum, maximum)
