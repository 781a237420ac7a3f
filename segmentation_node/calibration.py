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

from segmentation_node.perception.tracking import ViewGeometry

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
        if not np.isfinite(intrinsics).all():
            raise ValueError(f"{where}: K has values that are not finite numbers")
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



# Largest difference in K (pixels) still taken as the commissioned calibration: calibration files
# round to a few decimals; a refocused or recalibrated camera moves fx or cx by more.
INTRINSICS_TOLERANCE_PX = 0.5


def _same_view(one: ViewGeometry, other: ViewGeometry) -> bool:
    return np.array_equal(one.intrinsics, other.intrinsics) and np.array_equal(one.world_from_camera,
                                                                               other.world_from_camera)


class LiveCalibration:
    """What the node learns from `<camera>/camera_info` and `/tf_static` while it runs.

    With a commissioning file, its calibration is the one used: camera_info is only compared with
    it, and another image size or intrinsics mean the zone and backgrounds no longer fit the
    images (`problem`: the camera's images are bad input until it matches again). Without one,
    each camera's image size comes from its camera_info, and its geometry (cross-view identity)
    from the intrinsics and the static chain from `workcell_frame` to camera_info's frame_id.
    The node changes it from its executor thread only; the worker reads `image_size` (one
    dict lookup, atomic under the GIL)."""

    def __init__(self, workcell_frame: str):
        self.workcell_frame = workcell_frame
        self.transforms = StaticTransforms()
        self.version = 0  # bumped whenever geometry() changes
        self._commissioned: dict[str, ViewGeometry] = {}
        self._commissioned_sizes: dict[str, tuple[int, int]] = {}
        self._infos: dict[str, tuple] = {}  # camera -> (key of its last camera_info, that info)
        self._learned: dict[str, ViewGeometry] = {}
        self._sizes: dict[str, tuple[int, int]] = {}
        self._problems: dict[str, str] = {}
        self._states: dict[str, str] = {}  # camera -> what is used: one log line per change

    def commission(self, geometry: dict[str, ViewGeometry], sizes: dict[str, tuple[int, int]]
                   ) -> list[tuple[str, str]]:
        """Use a commissioning file's calibration (empty: none). Each method returns what changed,
        a line per camera, for the node's log."""
        self._commissioned, self._commissioned_sizes = dict(geometry), dict(sizes)
        return self._evaluate(list(self._infos))

    def camera_info(self, camera: str, info) -> list[tuple[str, str]]:
        key = (tuple(info.k), tuple(info.d), info.distortion_model, info.width, info.height, info.header.frame_id)
        if camera in self._infos and self._infos[camera][0] == key:
            return []  # the same calibration again: drivers republish it with every image
        self._infos[camera] = (key, info)
        return self._evaluate([camera])

    def add_transforms(self, transforms: Iterable) -> list[tuple[str, str]]:
        self.transforms.add(transforms)
        return self._evaluate(list(self._infos))

    def geometry(self) -> dict[str, ViewGeometry]:
        return dict(self._commissioned or self._learned)

    def image_size(self, camera: str) -> tuple[int, int] | None:
        """(rows, columns) the camera's images must have; None: not known (yet)."""
        return self._commissioned_sizes.get(camera) or self._sizes.get(camera)

    def problem(self, camera: str) -> str | None:
        return self._problems.get(camera)

    def _evaluate(self, cameras: list[str]) -> list[tuple[str, str]]:
        before = self.geometry()
        changed = []
        for camera in cameras:
            info = self._infos[camera][1]
            self._problems.pop(camera, None)
            if camera in self._commissioned:
                state = self._mismatch(camera, info)
                if state:
                    self._problems[camera] = state
                else:
                    state = "camera_info matches the commissioning"
            else:
                state = self._learn(camera, info)
            if self._states.get(camera) != state:
                self._states[camera] = state
                changed.append((camera, state))
        after = self.geometry()
        if after.keys() != before.keys() or any(not _same_view(after[c], before[c]) for c in after):
            self.version += 1
        return changed

    def _mismatch(self, camera: str, info) -> str | None:
        rows, columns = self._commissioned_sizes[camera]
        if (int(info.height), int(info.width)) != (rows, columns):
            return (f"camera_info says {info.width}x{info.height}, the cell was commissioned at {columns}x{rows} "
                    "(recommission: workcell_commission)")
        intrinsics = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
        if intrinsics[0, 0] == 0 and intrinsics[1, 1] == 0:
            return None  # the driver lost its calibration file: it claims no intrinsics, not other ones
        commissioned = self._commissioned[camera].intrinsics
        worst = float(np.abs(intrinsics - commissioned).max())
        if not worst <= INTRINSICS_TOLERANCE_PX:  # NaN too
            named = ", ".join(f"{name} {commissioned[i, j]:.1f} -> {intrinsics[i, j]:.1f}"
                              for name, (i, j) in (("fx", (0, 0)), ("fy", (1, 1)), ("cx", (0, 2)), ("cy", (1, 2)))
                              if abs(intrinsics[i, j] - commissioned[i, j]) > INTRINSICS_TOLERANCE_PX)
            return (f"camera_info intrinsics differ from the commissioning ({named or f'K by {worst:.1f} px'}; "
                    "recommission: workcell_commission)")
        return None

    def _learn(self, camera: str, info) -> str:
        self._learned.pop(camera, None)
        if int(info.width) > 0 and int(info.height) > 0:
            self._sizes[camera] = (int(info.height), int(info.width))
        try:
            calibration = CameraCalibration.from_camera_info(info, f"{camera}/camera_info")
            world_from_camera = self.transforms.lookup(self.workcell_frame, info.header.frame_id)
        except ValueError as error:
            return f"{info.width}x{info.height}; no geometry, so no cross-view identity: {error}"
        self._learned[camera] = ViewGeometry(calibration.intrinsics, world_from_camera)
        return (f"{info.width}x{info.height}, geometry from camera_info and /tf_static "
                f"({self.workcell_frame} -> {info.header.frame_id})")
