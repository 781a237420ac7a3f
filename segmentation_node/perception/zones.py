"""Regions of the workcell, given in the workcell frame, as pixel masks of a calibrated view."""
from __future__ import annotations

import cv2
import numpy as np


def project_points(points_world: np.ndarray, intrinsics: np.ndarray, world_from_camera: np.ndarray) -> np.ndarray:
    """Pixel coordinates of world points (pinhole, optical frame x right / y down / z forward)."""
    local = (np.atleast_2d(points_world) - world_from_camera[:3, 3]) @ world_from_camera[:3, :3]
    if (local[:, 2] <= 0).any():
        raise ValueError("a zone corner is behind the camera; the zone cannot be projected")
    pixels = local @ intrinsics.T
    return pixels[:, :2] / pixels[:, 2:3]


def zone_mask(corners_world: np.ndarray, intrinsics: np.ndarray, world_from_camera: np.ndarray,
              width: int, height: int) -> np.ndarray:
    """Pixels covered by the convex hull of a 3-D zone (e.g. the 8 corners of the bin)."""
    pixels = project_points(corners_world, intrinsics, world_from_camera)
    hull = cv2.convexHull(np.round(pixels).astype(np.int32))
    mask = np.zeros((height, width), np.uint8)
    cv2.fillConvexPoly(mask, hull, 1)
    return mask.astype(bool)
