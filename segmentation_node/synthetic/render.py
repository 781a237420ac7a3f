"""Ray-cast rendering of a synthetic frame: an RGB image per camera and its exact ground truth.

The instance map and the image come from the same visibility pass, so ground truth is exact:
pixel value = track id of the object seen there (0 = table). Each solid is only tested against
the rays inside its projected bounding box, which keeps 640x480 at a few frame sets a second.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from segmentation_node.contract import Role
from segmentation_node.synthetic.camera import PinholeCamera
from segmentation_node.synthetic.scene import DEFECT_COLOR, TABLE, Clip, FrameState, Surface

NOISE_SIGMA = 2.5  # sensor noise, 8-bit levels
BLUR_SIGMA = 0.7   # optics, pixels


@dataclass(frozen=True)
class InstanceTruth:
    track_id: int
    label: str
    attributes: tuple[str, ...]
    role: Role
    area: int                      # visible pixels
    visible_fraction: float        # visible pixels / pixels the object would cover unoccluded


@dataclass(frozen=True, eq=False)
class ViewRender:
    camera: PinholeCamera
    stamp_ns: int
    image: np.ndarray         # H x W x 3 uint8, rgb8
    instance_map: np.ndarray  # H x W uint16 track ids, 0 = background
    instances: tuple[InstanceTruth, ...]
    defect_mask: np.ndarray   # H x W bool: visible defect marks (scratches)

    def mask(self, track_id: int) -> np.ndarray:
        return self.instance_map == track_id


def _window(surface: Surface, camera: PinholeCamera) -> tuple[slice, slice] | None:
    """Pixel rows/cols that can see the solid, or None if it is out of view."""
    uv, depth = camera.project(surface.solid.corners())
    if (depth <= 1e-3).any():
        return slice(0, camera.height), slice(0, camera.width)
    (u0, v0), (u1, v1) = np.floor(uv.min(axis=0)), np.ceil(uv.max(axis=0))
    cols = slice(int(max(u0, 0)), int(min(u1 + 1, camera.width)))
    rows = slice(int(max(v0, 0)), int(min(v1 + 1, camera.height)))
    if cols.start >= cols.stop or rows.start >= rows.stop:
        return None
    return rows, cols


def _defect_pixels(surface: Surface, local: np.ndarray) -> np.ndarray:
    mark = surface.defect
    on_top = local[:, 2] > surface.solid.half_height - 1e-4
    return on_top & (np.abs(local[:, 1] - mark.offset_y) < mark.half_width) & (np.abs(local[:, 0]) < mark.half_length)


def render_view(clip: Clip, frame: FrameState, view_index: int, noise: bool = True) -> ViewRender:
    camera = clip.cameras[view_index]
    height, width = camera.height, camera.width
    directions = camera.ray_directions
    origin = camera.center
    pixels = height * width

    # Table plane z = 0 everywhere behind the objects.
    with np.errstate(divide="ignore"):
        depth = np.where(directions[:, 2] < 0, -origin[2] / directions[:, 2], np.inf)
    normals = np.tile([0.0, 0.0, 1.0], (pixels, 1))
    track = np.zeros(pixels, dtype=np.uint16)
    color = np.tile(TABLE.color, (pixels, 1))
    specular = np.full(pixels, TABLE.specular)
    shininess = np.full(pixels, TABLE.shininess)
    unoccluded: dict[int, int] = {}
    defect = np.zeros(pixels, dtype=bool)

    for obj in frame.objects:
        covered = []  # pixel indices the object would cover with nothing in front of it
        for surface in obj.surfaces:
            window = _window(surface, camera)
            if window is None:
                continue
            rows, cols = window
            index = (np.arange(rows.start, rows.stop)[:, None] * width + np.arange(cols.start, cols.stop)).ravel()
            t, normal, local = surface.solid.intersect(origin, directions[index])
            hit = np.isfinite(t)
            covered.append(index[hit])
            nearer = hit & (t < depth[index])
            won = index[nearer]
            depth[won] = t[nearer]
            normals[won] = normal[nearer]
            track[won] = obj.track_id
            color[won] = surface.material.color
            specular[won] = surface.material.specular
            shininess[won] = surface.material.shininess
            defect[won] = False
            if surface.defect is not None:
                scratched = won[_defect_pixels(surface, local[nearer])]
                color[scratched] = DEFECT_COLOR
                specular[scratched] = 0.02  # a scratch is matte, even on polished steel
                defect[scratched] = True
        unoccluded[obj.track_id] = int(np.unique(np.concatenate(covered)).size) if covered else 0

    image = _shade(frame, origin, directions, depth, normals, color, specular, shininess).reshape(height, width, 3)
    if noise:
        rng = np.random.default_rng([clip.config.seed, frame.index, view_index])
        image = cv2.GaussianBlur(image, (0, 0), BLUR_SIGMA)
        image = image + rng.normal(0.0, NOISE_SIGMA / 255.0, image.shape).astype(np.float32)
    image_u8 = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    instance_map = track.reshape(height, width)
    return ViewRender(camera, frame.stamp_ns, image_u8, instance_map,
                      _instances(frame, instance_map, unoccluded), defect.reshape(height, width))


def _shade(frame, origin, directions, depth, normals, color, specular, shininess) -> np.ndarray:
    light = frame.lighting
    points = origin + np.where(np.isfinite(depth), depth, 0.0)[:, None] * directions
    on_table = normals[:, 2] > 0.999
    # Faint wood grain so the background is not flat (helps nothing cheat on colour alone).
    grain = 1.0 + 0.035 * np.sin(points[:, 0] * 90.0 + 4.0 * np.sin(points[:, 1] * 23.0))
    base = color * np.where(on_table & (points[:, 2] < 1e-4), grain, 1.0)[:, None]
    lambert = np.clip(normals @ light.direction, 0.0, None)
    halfway = light.direction - directions
    halfway /= np.linalg.norm(halfway, axis=1, keepdims=True)
    highlight = specular * np.clip((normals * halfway).sum(axis=1), 0.0, None) ** shininess
    shaded = base * (light.ambient + light.intensity * lambert)[:, None] + (light.intensity * highlight)[:, None]
    return shaded.astype(np.float32)


def _instances(frame: FrameState, instance_map: np.ndarray, unoccluded: dict[int, int]) -> tuple[InstanceTruth, ...]:
    instances = []
    for obj in frame.objects:
        mask = instance_map == obj.track_id
        area = int(mask.sum())
        if area == 0:
            continue
        instances.append(InstanceTruth(obj.track_id, obj.label, obj.attributes, obj.role, area,
                                       area / max(unoccluded[obj.track_id], area)))
    return tuple(instances)


def render_frame_set(clip: Clip, frame_index: int, noise: bool = True) -> list[ViewRender]:
    frame = clip.frames[frame_index]
    return [render_view(clip, frame, view, noise) for view in range(len(clip.cameras))]
