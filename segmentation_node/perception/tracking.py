"""Stable track ids: per view over time (mask IoU), and one id per physical object across
views (calibrated cameras, objects resting near a known plane: the bin floor).

Memory is bounded: at most `max_tracks` per view, tracks unseen for `max_age` frames are dropped.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from segmentation_node.masks import BoxedMask, greedy_match
from segmentation_node.perception.types import Detection


@dataclass
class Track:
    track_id: int
    label: str
    mask: BoxedMask
    stability: float = 0.0  # smoothed IoU of consecutive masks; 0 for a new track
    hits: int = 1
    age: int = 0            # frames since last matched


@dataclass
class ViewTracker:
    """Associates each frame's detections with the view's tracks by mask IoU (greedy, best
    first, same label only) and gives each detection a per-view track id."""

    min_iou: float = 0.3
    max_age: int = 5
    max_tracks: int = 64
    smoothing: float = 0.5
    tracks: list[Track] = field(default_factory=list)
    _next_id: int = 1

    def update(self, detections: list[Detection]) -> list[Track]:
        """The track of each detection, in order. Unmatched tracks age; stale ones are dropped."""
        assigned: dict[int, Track] = {}
        used_tracks = set()
        for d_index, t_index, iou in greedy_match(
                [d.mask for d in detections], [t.mask for t in self.tracks], self.min_iou,
                lambda d, t: detections[d].label == self.tracks[t].label):
            track = self.tracks[t_index]
            # The first match sets stability outright; later ones smooth it.
            track.stability = iou if track.hits == 1 else self.smoothing * track.stability + (1 - self.smoothing) * iou
            track.mask, track.hits, track.age = detections[d_index].mask, track.hits + 1, 0
            assigned[d_index] = track
            used_tracks.add(t_index)
        for t_index, track in enumerate(self.tracks):
            if t_index not in used_tracks:
                track.age += 1
        self.tracks = [t for t in self.tracks if t.age <= self.max_age]
        for d_index, detection in enumerate(detections):
            if d_index not in assigned:
                track = Track(self._next_id, detection.label, detection.mask)
                self._next_id += 1
                self.tracks.append(track)
                assigned[d_index] = track
        if len(self.tracks) > self.max_tracks:  # keep the most recently seen
            self.tracks = sorted(self.tracks, key=lambda t: (t.age, -t.hits))[:self.max_tracks]
        return [assigned[i] for i in range(len(detections))]


@dataclass(frozen=True, eq=False)
class ViewGeometry:
    """Calibration of one view: intrinsics and the optical frame's pose in the workcell frame."""

    intrinsics: np.ndarray
    world_from_camera: np.ndarray

    def ray_to_plane(self, pixel: tuple[float, float], plane_z: float) -> np.ndarray | None:
        """Workcell point where the pixel's ray meets the plane z = plane_z (None if it never does)."""
        direction = self.world_from_camera[:3, :3] @ np.linalg.solve(self.intrinsics, [pixel[0], pixel[1], 1.0])
        origin = self.world_from_camera[:3, 3]
        if abs(direction[2]) < 1e-9:
            return None
        t = (plane_z - origin[2]) / direction[2]
        return origin + t * direction if t > 0 else None


@dataclass
class CrossViewIdentity:
    """Gives one global id to the per-view tracks of one physical object.

    A new per-view track is placed in the workcell by intersecting its mask centroid's ray with
    the plane the parts rest on; it joins the nearest global object of the same label that this
    view does not already show — within `radius` for `plane_labels` (objects that really lie on
    that plane), at any distance for the rest (hands, tools: few, and not on the plane) — else
    it founds a new one. Once joined, the mapping is kept for the track's life, so ids do not
    flip when objects move."""

    geometry: dict[str, ViewGeometry]
    plane_labels: frozenset[str] = frozenset()
    plane_z: float = 0.015
    radius: float = 0.03
    _global_of: dict[tuple[str, int], int] = field(default_factory=dict)
    _position: dict[int, np.ndarray] = field(default_factory=dict)
    _label: dict[int, str] = field(default_factory=dict)
    _next_id: int = 1

    def assign(self, camera: str, tracks: list[Track]) -> list[int]:
        live = {(camera, t.track_id) for t in tracks}
        for key in [k for k in self._global_of if k[0] == camera and k not in live]:
            del self._global_of[key]  # the view dropped that track
        taken_here = {self._global_of[(camera, t.track_id)] for t in tracks if (camera, t.track_id) in self._global_of}
        ids = []
        for track in tracks:
            key = (camera, track.track_id)
            point = self.geometry[camera].ray_to_plane(track.mask.centroid(), self.plane_z) \
                if camera in self.geometry else None
            if key not in self._global_of:
                self._global_of[key] = self._join_or_found(track.label, point, taken_here)
                taken_here.add(self._global_of[key])
            global_id = self._global_of[key]
            if point is not None:
                self._position[global_id] = point
            ids.append(global_id)
        self._forget_unreferenced()
        return ids

    def _join_or_found(self, label: str, point: np.ndarray | None, taken: set[int]) -> int:
        candidates = [(np.linalg.norm(self._position[g][:2] - point[:2])
                       if point is not None and g in self._position else np.inf, g)
                      for g, other in self._label.items() if other == label and g not in taken]
        if label in self.plane_labels:
            candidates = [c for c in candidates if c[0] <= self.radius]
        if candidates:
            return min(candidates)[1]
        global_id = self._next_id
        self._next_id += 1
        self._label[global_id] = label
        return global_id

    def _forget_unreferenced(self) -> None:
        referenced = set(self._global_of.values())
        for global_id in [g for g in self._label if g not in referenced]:
            self._label.pop(global_id)
            self._position.pop(global_id, None)
