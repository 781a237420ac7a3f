"""Calibrated pinhole cameras of the synthetic cell (optical frame: x right, y down, z forward)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True, eq=False)
class PinholeCamera:
    name: str
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    world_from_camera: np.ndarray  # 4x4 pose of the optical frame in the workcell frame

    @property
    def frame_id(self) -> str:
        return f"{self.name}_optical_frame"

    @property
    def intrinsics(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def center(self) -> np.ndarray:
        return self.world_from_camera[:3, 3]

    @cached_property
    def ray_directions(self) -> np.ndarray:
        """Unit world-frame ray direction through every pixel centre, shape (H*W, 3), row-major."""
        v, u = np.mgrid[0:self.height, 0:self.width].astype(np.float64)
        local = np.stack([(u.ravel() + 0.5 - self.cx) / self.fx,
                          (v.ravel() + 0.5 - self.cy) / self.fy,
                          np.ones(u.size)], axis=1)
        world = local @ self.world_from_camera[:3, :3].T
        return world / np.linalg.norm(world, axis=1, keepdims=True)

    def project(self, points_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (N, 2) and depth along the optical axis (N,) of world points."""
        points = np.atleast_2d(points_world)
        rotation, origin = self.world_from_camera[:3, :3], self.world_from_camera[:3, 3]
        local = (points - origin) @ rotation
        depth = local[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = np.stack([self.fx * local[:, 0] / depth + self.cx,
                           self.fy * local[:, 1] / depth + self.cy], axis=1)
        return uv, depth


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """4x4 world pose of an optical frame at `eye` looking at `target`."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, down, forward], axis=1)
    pose[:3, 3] = eye
    return pose


# Camera positions around the bin (metres, workcell frame: table at z=0, bin centred at origin).
_RIG_EYES = (
    ("cam_top", (0.06, -0.10, 0.78)),
    ("cam_left", (-0.42, -0.46, 0.58)),
    ("cam_right", (0.50, -0.36, 0.56)),
    ("cam_back", (0.02, 0.55, 0.62)),
)


def camera_rig(views: int, width: int, height: int) -> list[PinholeCamera]:
    """2-4 calibrated cameras that all see the bin; the same focal ratio at any resolution."""
    if not 1 <= views <= len(_RIG_EYES):
        raise ValueError(f"views must be 1..{len(_RIG_EYES)}, got {views}")
    focal = 0.95 * width
    return [PinholeCamera(name, width, height, focal, focal, width / 2.0, height / 2.0,
                          look_at(eye, (0.0, 0.0, 0.03)))
            for name, eye in _RIG_EYES[:views]]
