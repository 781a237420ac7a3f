"""Analytic solids for the ray caster: oriented boxes, cylinders and capsules.

Each `intersect` takes one ray origin and many unit directions and returns the distance to the
first hit (inf on a miss), the world normal there and the hit point in the solid's own frame
(for surface marks such as defects).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EPS = 1e-9


def yaw_rotation(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _safe(values: np.ndarray) -> np.ndarray:
    return np.where(np.abs(values) < _EPS, _EPS, values)


@dataclass(frozen=True, eq=False)
class Box:
    center: np.ndarray
    half_size: np.ndarray
    rotation: np.ndarray  # world_from_local

    @property
    def half_height(self) -> float:
        return float(self.half_size[2])

    def corners(self) -> np.ndarray:
        signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
        return self.center + (signs * self.half_size) @ self.rotation.T

    def intersect(self, origin, directions):
        o = (origin - self.center) @ self.rotation
        d = _safe(directions @ self.rotation)
        t1 = (-self.half_size - o) / d
        t2 = (self.half_size - o) / d
        t_near = np.minimum(t1, t2)
        t_far = np.maximum(t1, t2)
        # Column-wise reductions: much faster than .max(axis=1) on (N, 3) arrays.
        t_enter = np.maximum(np.maximum(t_near[:, 0], t_near[:, 1]), t_near[:, 2])
        t_exit = np.minimum(np.minimum(t_far[:, 0], t_far[:, 1]), t_far[:, 2])
        hit = (t_exit >= t_enter) & (t_enter > 0)
        t = np.where(hit, t_enter, np.inf)
        axis = t_near.argmax(axis=1)
        normal_local = np.zeros_like(d)
        rows = np.arange(len(d))
        normal_local[rows, axis] = -np.sign(d[rows, axis])
        local = o + np.where(hit, t, 0.0)[:, None] * d
        return t, normal_local @ self.rotation.T, local


@dataclass(frozen=True, eq=False)
class Cylinder:
    """Solid cylinder around its local z axis."""

    center: np.ndarray
    radius: float
    half_height: float
    rotation: np.ndarray

    def corners(self) -> np.ndarray:
        return Box(self.center, np.array([self.radius, self.radius, self.half_height]), self.rotation).corners()

    def intersect(self, origin, directions):
        o = (origin - self.center) @ self.rotation
        d = directions @ self.rotation
        # Curved side: solve |(o + t d)_xy| = r, keep the entry point within the height.
        a = _safe(d[:, 0] ** 2 + d[:, 1] ** 2)
        b = 2.0 * (o[0] * d[:, 0] + o[1] * d[:, 1])
        c = o[0] ** 2 + o[1] ** 2 - self.radius ** 2
        disc = b * b - 4.0 * a * c
        with np.errstate(invalid="ignore"):
            t_side = (-b - np.sqrt(disc)) / (2.0 * a)
        z_side = o[2] + t_side * d[:, 2]
        t_side = np.where((disc >= 0) & (t_side > 0) & (np.abs(z_side) <= self.half_height), t_side, np.inf)
        # Flat caps: the one facing the ray.
        dz = _safe(d[:, 2])
        cap_z = -np.sign(dz) * self.half_height
        t_cap = (cap_z - o[2]) / dz
        cap_xy = o[:2] + t_cap[:, None] * d[:, :2]
        inside_cap = (cap_xy ** 2).sum(axis=1) <= self.radius ** 2
        t_cap = np.where(inside_cap & (t_cap > 0), t_cap, np.inf)
        t = np.minimum(t_side, t_cap)
        hit = np.isfinite(t)
        local = o + np.where(hit, t, 0.0)[:, None] * d
        normal_local = np.where(
            (t_cap <= t_side)[:, None],
            np.stack([np.zeros_like(dz), np.zeros_like(dz), np.sign(cap_z)], axis=1),
            np.stack([local[:, 0], local[:, 1], np.zeros_like(dz)], axis=1) / self.radius)
        return t, normal_local @ self.rotation.T, local


@dataclass(frozen=True, eq=False)
class Capsule:
    """Segment p0-p1 swept by a sphere: forearms and fingers."""

    p0: np.ndarray
    p1: np.ndarray
    radius: float

    def corners(self) -> np.ndarray:
        r = self.radius
        signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
        return np.concatenate([self.p0 + r * signs, self.p1 + r * signs])

    def intersect(self, origin, directions):
        axis = self.p1 - self.p0
        oa = origin - self.p0
        axis_len2 = axis @ axis
        along_dir = directions @ axis
        along_origin = oa @ axis
        dir_oa = directions @ oa
        a = _safe(axis_len2 - along_dir ** 2)
        b = axis_len2 * dir_oa - along_origin * along_dir
        c = axis_len2 * (oa @ oa) - along_origin ** 2 - self.radius ** 2 * axis_len2
        disc = b * b - a * c
        with np.errstate(invalid="ignore"):
            t_body = (-b - np.sqrt(disc)) / a
        y = along_origin + t_body * along_dir
        t_body = np.where((disc >= 0) & (y > 0) & (y < axis_len2) & (t_body > 0), t_body, np.inf)
        t = t_body
        for end in (self.p0, self.p1):  # spherical ends
            oc = origin - end
            b_end = directions @ oc
            disc_end = b_end ** 2 - (oc @ oc - self.radius ** 2)
            with np.errstate(invalid="ignore"):
                t_end = -b_end - np.sqrt(disc_end)
            t = np.minimum(t, np.where((disc_end >= 0) & (t_end > 0), t_end, np.inf))
        hit = np.isfinite(t)
        points = origin + np.where(hit, t, 0.0)[:, None] * directions
        s = np.clip(((points - self.p0) @ axis) / axis_len2, 0.0, 1.0)
        normal = (points - (self.p0 + s[:, None] * axis)) / self.radius
        return t, normal, points - self.p0
