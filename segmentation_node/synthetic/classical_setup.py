"""Commissioning of the classical backend on the synthetic cell: colour classifier trained on
ground truth of scenes other than the one evaluated, empty-cell backgrounds, pick zones."""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from segmentation_node.calibration import CameraCalibration
from segmentation_node.masks import BoxedMask
from segmentation_node.perception.classical import (
    BACKGROUND_CLASS, DEFECT_CLASS, BackgroundModel, ColorClassifier, defect_pixels)
from segmentation_node.perception.commissioning import CameraCommissioning, Commissioning
from segmentation_node.perception.tracking import ViewGeometry
from segmentation_node.synthetic.camera import PinholeCamera
from segmentation_node.synthetic.render import render_frame_set
from segmentation_node.synthetic.scene import (
    BIN_HALF, BIN_WALL_HEIGHT, DEFAULT_ROLES, DEFECTIVE, Clip, ClipConfig, generate_clip)

CLASSES = (BACKGROUND_CLASS, *sorted(label for label in DEFAULT_ROLES if label != "bin"), DEFECT_CLASS)
PART_CLASSES = ("part_a", "part_b")
STATIC_CLASSES = ("fixture",)  # recorded with the empty cell


GAINS = (0.8, 1.0, 1.2)  # lighting augmentation: the cell gets dimmer and brighter than rendered


def train_classifier(template: ClipConfig, seeds: Sequence[int] = (101, 102, 103),
                     frames_per_clip: int = 6) -> ColorClassifier:
    """Learn colours from rendered clips of other seeds: frames spread over each clip so the
    hand, the picks and the dimmed light are all seen, each at several brightness gains."""
    images, label_maps, areas, parts = [], [], {}, []
    for seed in seeds:
        clip = generate_clip(replace(template, seed=seed))
        for index in np.linspace(0, len(clip.frames) - 1, frames_per_clip).round().astype(int):
            labels_of = {o.track_id: o.label for o in clip.frames[index].objects}
            for view in render_frame_set(clip, int(index)):
                lookup = np.zeros(int(view.instance_map.max()) + 1, dtype=np.uint8)
                for track_id, label in labels_of.items():
                    if label in CLASSES and track_id < lookup.size:
                        lookup[track_id] = CLASSES.index(label)
                labels = lookup[view.instance_map]
                labels[view.defect_mask] = CLASSES.index(DEFECT_CLASS)
                for gain in GAINS:
                    images.append(np.clip(view.image.astype(np.float32) * gain, 0, 255).astype(np.uint8))
                    label_maps.append(labels)
                for instance in view.instances:
                    if instance.visible_fraction > 0.9:
                        areas.setdefault(instance.label, []).append(instance.area)
                        if instance.label in PART_CLASSES:
                            parts.append((view.image, BoxedMask.from_array(view.mask(instance.track_id)),
                                          instance.label, DEFECTIVE in instance.attributes))
    typical = {label: float(np.median(values)) for label, values in areas.items() if label in CLASSES}
    classifier = ColorClassifier.fit(images, label_maps, CLASSES, typical)
    return replace(classifier, defect_bands=_defect_bands(classifier, parts))


def _defect_bands(classifier: ColorClassifier, parts) -> dict[str, tuple[float, float]]:
    """Per part class, the defect-pixel counts that decide: below the fewest any defective
    training part showed is intact, above the most any intact one showed is defective; both
    edges widened by a quarter (a detected mask is not the true one), the rest undecided."""
    counts: dict[tuple[str, bool], list[int]] = {}
    for image, mask, label, defective in parts:
        defect = classifier.predict(image)[0] == classifier.index(DEFECT_CLASS)
        counts.setdefault((label, defective), []).append(defect_pixels(mask, defect))
    bands = {}
    for label in sorted({label for label, _ in counts}):
        intact, broken = counts.get((label, False)), counts.get((label, True))
        if intact and broken:
            bands[label] = (0.8 * min(broken), 1.25 * max(intact))
    return bands


def bin_zone(camera: PinholeCamera) -> np.ndarray:
    """The bin's box, floor to rim, as a pixel mask of the camera."""
    (hx, hy), top = BIN_HALF, BIN_WALL_HEIGHT
    corners = np.array([[x, y, z] for x in (-hx, hx) for y in (-hy, hy) for z in (0.0, top)])
    return CameraCalibration(camera.intrinsics, np.zeros(0), camera.width, camera.height).mask(
        corners, camera.world_from_camera)


def empty_cell_backgrounds(clip: Clip, frames: int = 5) -> dict[str, BackgroundModel]:
    """What commissioning records before parts arrive: the cell with bin and fixtures only."""
    empty = generate_clip(replace(clip.config, parts=0, picks=0, hand=False, tool=False))
    indices = np.linspace(0, len(empty.frames) - 1, min(frames, len(empty.frames))).round().astype(int)
    renders = [render_frame_set(empty, int(index)) for index in indices]
    return {camera.name: BackgroundModel.fit([views[i].image for views in renders])
            for i, camera in enumerate(clip.cameras)}


def commission(clip: Clip, classifier: ColorClassifier) -> Commissioning:
    """Everything the segmentation node needs to run the classical backend on this cell."""
    backgrounds = empty_cell_backgrounds(clip)
    largest_part = int(max(classifier.typical_area.get(part, 0.0) for part in PART_CLASSES))
    cameras = {camera.name: CameraCommissioning(ViewGeometry(camera.intrinsics, camera.world_from_camera),
                                                backgrounds[camera.name], bin_zone(camera), largest_part)
               for camera in clip.cameras}
    return Commissioning(cameras, classifier, PART_CLASSES, STATIC_CLASSES)


def commission_synthetic(seed: int, views: int, width: int, height: int) -> Commissioning:
    """workcell_commission without --bag: the synthetic cell of that seed, views and size."""
    config = ClipConfig(seed=seed, views=views, width=width, height=height, frames=20)
    return commission(generate_clip(config), train_classifier(config))
