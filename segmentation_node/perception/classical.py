"""The classical channel: no neural network, CPU-cheap, independent of SAM3.

- `BackgroundModel`: per view, the empty cell (median of a few frames) and change detection
  with a global gain so dimmed lights are not "change".
- `intrusion_regions`: changed regions that leave the pick zone or are far larger than any
  part: "unknown object in the cell". A redundant forbidden-region source that no model output
  can silence.
- `ColorClassifier`: a colour lookup table learned from labelled pixels (the synthetic ground
  truth), with per-class size priors: the shape half of the "colour/shape" classifier.
- `ClassicalBackend`: the two together behind the SegmentationBackend interface, the CPU
  backend of the demo on the synthetic scene.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from segmentation_node.atomic_io import atomic_write_bytes
from segmentation_node.contract import Source
from segmentation_node.masks import bounding_box
from segmentation_node.perception.types import CameraFrame, Detection, Prompt

INTRUSION_LABEL = "unknown_object"
DEFECT_CLASS = "defect"
BACKGROUND_CLASS = "background"
_BITS = 5  # colour quantisation: 32 levels per channel


def _quantize(image: np.ndarray) -> np.ndarray:
    q = image.astype(np.int32) >> (8 - _BITS)
    return (q[..., 0] << (2 * _BITS)) | (q[..., 1] << _BITS) | q[..., 2]


def _components(mask: np.ndarray, min_area: int) -> list[np.ndarray]:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return [labels == i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= min_area]


# --- background and intrusion --------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class BackgroundModel:
    """The empty cell as one camera sees it: per-pixel median, and how much each pixel varied
    while recording it (light moving over the bin walls), which widens its tolerance."""

    median: np.ndarray  # H x W x 3 float32
    spread: np.ndarray  # H x W float32, largest deviation seen while fitting, 8-bit levels
    threshold: float = 28.0  # 8-bit levels on the largest channel difference, on top of the spread

    @classmethod
    def fit(cls, frames: Sequence[np.ndarray], threshold: float = 28.0) -> "BackgroundModel":
        """Record the empty cell over frames that span its lighting (dimmed, moving light)."""
        if not frames:
            raise ValueError("a background model needs at least one frame of the empty cell")
        stack = np.stack([cv2.GaussianBlur(f.astype(np.float32), (5, 5), 0) for f in frames])
        median = np.median(stack, axis=0)
        spread = np.max([_difference(frame, median) for frame in stack], axis=0)
        return cls(median, spread.astype(np.float32), threshold)

    def foreground(self, image: np.ndarray) -> np.ndarray:
        if image.shape != self.median.shape:
            raise ValueError(f"image {image.shape} does not match the background {self.median.shape}")
        changed = _difference(cv2.GaussianBlur(image.astype(np.float32), (5, 5), 0), self.median) \
            > self.threshold + self.spread
        kernel = np.ones((3, 3), np.uint8)
        return cv2.morphologyEx(changed.astype(np.uint8), cv2.MORPH_OPEN, kernel).astype(bool)


_GAIN_STRIDE = 4  # the global gain is a median over every 4th pixel of every 4th row


def _difference(smooth: np.ndarray, median: np.ndarray) -> np.ndarray:
    """Largest channel difference after one global gain, which absorbs the lights being dimmed.

    Channels are combined with element-wise operations, not numpy reductions over the last
    axis (several times slower on H x W x 3), and the gain, one number, is estimated on a grid."""
    grid = (slice(None, None, _GAIN_STRIDE), slice(None, None, _GAIN_STRIDE))
    gain = float(np.median(_channel_sum(smooth[grid]) / (_channel_sum(median[grid]) + 1.0)))
    difference = cv2.absdiff(smooth, median * np.float32(gain))
    return np.maximum(np.maximum(difference[..., 0], difference[..., 1]), difference[..., 2])


def _channel_sum(image: np.ndarray) -> np.ndarray:
    return image[..., 0] + image[..., 1] + image[..., 2]


def intrusion_regions(foreground: np.ndarray, zone: np.ndarray, max_part_area: int,
                      min_area: int = 40) -> list[np.ndarray]:
    """Changed regions that reach outside the pick zone or are much larger than a part."""
    regions = []
    for component in _components(foreground, min_area):
        outside = int((component & ~zone).sum())
        if outside >= min_area or component.sum() > 3 * max_part_area:
            regions.append(component)
    return regions


# --- colour / shape classifier -------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ColorClassifier:
    classes: tuple[str, ...]       # index 0 is BACKGROUND_CLASS
    table: np.ndarray              # quantised colour -> class index (uint8)
    confidence: np.ndarray         # quantised colour -> posterior of that class (float32)
    typical_area: dict[str, float]  # median instance area per class in the training views

    @classmethod
    def fit(cls, images: Sequence[np.ndarray], label_maps: Sequence[np.ndarray], classes: Sequence[str],
            typical_area: dict[str, float]) -> "ColorClassifier":
        """Learn from RGB images and per-pixel class indices into `classes` (0 = background)."""
        cells = 1 << (3 * _BITS)
        counts = np.zeros((len(classes), cells), dtype=np.float64)
        for image, labels in zip(images, label_maps):
            index = _quantize(image).ravel() * len(classes) + labels.ravel()
            counts += np.bincount(index, minlength=cells * len(classes)).reshape(cells, len(classes)).T
        # Spread each colour's evidence to its neighbours so near-miss colours still classify.
        cube = counts.reshape(len(classes), *(1 << _BITS,) * 3)
        padded = np.pad(cube, ((0, 0), (1, 1), (1, 1), (1, 1)), mode="edge")
        smooth = sum(padded[:, 1 + dx:1 + dx + cube.shape[1], 1 + dy:1 + dy + cube.shape[2],
                            1 + dz:1 + dz + cube.shape[3]]
                     for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1)).reshape(len(classes), cells)
        # Balanced likelihoods: small classes (hands, parts) are not drowned by the table.
        likelihood = smooth / np.maximum(smooth.sum(axis=1, keepdims=True), 1.0)
        total = likelihood.sum(axis=0)
        table = np.where(total > 0, likelihood.argmax(axis=0), 0).astype(np.uint8)
        confidence = np.where(total > 0, likelihood.max(axis=0) / np.maximum(total, 1e-12), 0.0)
        return cls(tuple(classes), table, confidence.astype(np.float32), dict(typical_area))

    def predict(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class index and confidence per pixel."""
        cells = _quantize(image)
        return self.table[cells], self.confidence[cells]

    def index(self, name: str) -> int:
        return self.classes.index(name)

    def save(self, path: Path) -> None:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, classes=np.array(self.classes), table=self.table, confidence=self.confidence,
                            area_names=np.array(list(self.typical_area)),
                            area_values=np.array(list(self.typical_area.values()), dtype=np.float64))
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> "ColorClassifier":
        with np.load(path) as data:
            return cls(tuple(str(c) for c in data["classes"]), data["table"], data["confidence"],
                       dict(zip((str(n) for n in data["area_names"]), data["area_values"].tolist())))


# --- the backend ---------------------------------------------------------------------------------
@dataclass
class ViewSetup:
    """What the classical backend knows about one camera: its empty cell and its pick zone."""

    background: BackgroundModel
    zone: np.ndarray  # H x W bool


class ClassicalBackend:
    """Colour/shape classifier + change detection. Stateless between frames: tracking is done
    downstream, so every call is a keyframe."""

    name = "classical"

    def __init__(self, classifier: ColorClassifier, views: dict[str, ViewSetup], split_parts: Sequence[str] = (),
                 static_classes: Sequence[str] = ()):
        self.classifier = classifier
        self.views = views
        self.split_parts = set(split_parts)  # classes whose touching instances are split apart
        # Classes recorded in the empty cell (fixtures) are found by colour alone; every other
        # class must also have changed the scene, so a brightly lit table is never a "hand".
        self.static_classes = set(static_classes)
        self.model_version = f"classical-{len(classifier.classes)}classes"

    def reset(self) -> None:
        """Nothing to forget: every frame is processed on its own."""

    def process(self, views: Sequence[CameraFrame], prompts: Sequence[Prompt], keyframe: bool = True) -> list[list[Detection]]:
        labels = [label for label in dict.fromkeys(p.label for p in prompts) if label in self.classifier.classes]
        return [self._process_view(view, labels) for view in views]

    def _process_view(self, view: CameraFrame, labels: Sequence[str]) -> list[Detection]:
        setup = self.views.get(view.camera)
        if setup is None:
            raise KeyError(f"camera '{view.camera}' has no background model; known: {', '.join(self.views)}")
        classes, confidence = self.classifier.predict(view.image)
        foreground = setup.background.foreground(view.image)
        defect = classes == self.classifier.index(DEFECT_CLASS) if DEFECT_CLASS in self.classifier.classes \
            else np.zeros(classes.shape, bool)
        detections, seeds, seed_labels = [], [], []
        near_change, edges = _grow(foreground, 2), None  # edges: only once a part class needs them
        # Classes that must have changed the scene can only be found near the change: their
        # masks and components are worked out in its box (a fifth to a third of the view here).
        changed_box = _box_around(near_change, margin=3) if near_change.any() else None
        whole = (slice(None), slice(None))
        for label in labels:
            box = whole if label in self.static_classes else changed_box
            if box is None:
                continue  # nothing changed: no part, hand or tool can be in view
            typical = self.classifier.typical_area.get(label, 200.0)
            mask = classes[box] == self.classifier.index(label)
            if label in self.split_parts:
                mask &= foreground[box]
                mask |= defect[box] & _grow(mask, 2)  # scratches belong to the part they are on
            elif label not in self.static_classes:
                mask &= near_change[box]
            mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8)).astype(bool)
            pieces = [_in_view(piece, box, classes.shape) for piece in _components(mask, max(12, int(0.15 * typical)))]
            if label not in self.split_parts:
                detections += [Detection(p, _score(confidence, p), label) for p in pieces]
                continue
            edges = _edges(view.image) if edges is None else edges
            for component in pieces:
                for piece in _split_touching(component, typical, edges):
                    seeds.append(piece)
                    seed_labels.append(label)
        forbidden_colour = np.isin(classes, [self.classifier.index(d.label) for d in detections])
        for piece, label in zip(_complete(seeds, foreground & ~forbidden_colour, view.image), seed_labels):
            interior = cv2.erode(piece.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
            attributes = ("defective",) if (interior & defect).sum() >= 4 else ()
            detections.append(Detection(piece, _score(confidence, piece), label, attributes=attributes))
        largest_part = max((self.classifier.typical_area.get(p, 0.0) for p in self.split_parts), default=500.0)
        for region in intrusion_regions(foreground, setup.zone, int(largest_part)):
            detections.append(Detection(region, 1.0, INTRUSION_LABEL, source=Source.INTRUSION))
        return detections


def _grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    size = 2 * pixels + 1
    return cv2.dilate(mask.astype(np.uint8), np.ones((size, size), np.uint8)).astype(bool)


def _score(confidence: np.ndarray, mask: np.ndarray) -> float:
    return float(np.clip(confidence[mask].mean(), 0.0, 1.0))


def _edges(image: np.ndarray) -> np.ndarray:
    gray = cv2.GaussianBlur(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (3, 3), 0)
    return cv2.dilate(cv2.Canny(gray, 30, 90), np.ones((2, 2), np.uint8)).astype(bool)


def _complete(seeds: list[np.ndarray], changed: np.ndarray, image: np.ndarray) -> list[np.ndarray]:
    """Grow part seeds (pixels whose colour says "part") over the changed pixels next to them:
    shaded sides and rims of a part have no part colour but are part of its silhouette."""
    if not seeds:
        return []
    reach = changed & _grow(np.logical_or.reduce(seeds), 4)
    # Everything outside `reach` is a fixed marker, so the flood is decided inside its box.
    box = _box_around(reach | np.logical_or.reduce(seeds))
    markers = np.zeros(reach[box].shape, np.int32)
    markers[~reach[box]] = len(seeds) + 1
    for index, seed in enumerate(seeds, start=1):
        markers[seed[box]] = index
    cv2.watershed(np.ascontiguousarray(image[box]), markers)
    completed = []
    for index, seed in enumerate(seeds, start=1):
        piece = seed.copy()
        piece[box] |= (markers == index) & reach[box]
        completed.append(piece)
    return completed


def _split_touching(component: np.ndarray, typical_area: float, edges: np.ndarray) -> list[np.ndarray]:
    """Split a blob of touching same-class parts. Seeds are the pieces left when image edges
    (the rim of a part lying on another) are cut out; failing that, the peaks of the distance
    transform (two round parts side by side). A watershed grows the seeds back to the blob."""
    if np.count_nonzero(component) < 1.3 * typical_area:
        return [component]  # one part: its own edges (a scratch, a highlight) must not cut it
    box = _box_around(component)  # the blob's box and a ring of background: all the work is there
    blob = component[box]
    cores = _components(blob & ~edges[box], max(8, int(0.25 * typical_area)))
    if len(cores) < 2:
        distance = cv2.distanceTransform(blob.astype(np.uint8), cv2.DIST_L2, 5)
        cores = _components(distance > 0.6 * distance.max(), 1)
        if len(cores) < 2:
            return [component]
    markers = np.zeros(blob.shape, np.int32)
    for index, core in enumerate(cores, start=1):
        markers[core] = index
    markers[~blob] = len(cores) + 1  # everything outside is one extra "background" seed
    cv2.watershed(np.dstack([blob.astype(np.uint8) * 255] * 3), markers)
    pieces = [(markers == index) & blob for index in range(1, len(cores) + 1)]
    return [_in_view(piece, box, component.shape) for piece in pieces if piece.any()]


def _in_view(piece: np.ndarray, box: tuple[slice, slice], shape: tuple[int, int]) -> np.ndarray:
    """A mask found inside `box`, as a mask of the whole view."""
    if piece.shape == shape:
        return piece
    full = np.zeros(shape, bool)
    full[box] = piece
    return full


def _box_around(mask: np.ndarray, margin: int = 2) -> tuple[slice, slice]:
    """The mask's bounding box grown by `margin` pixels (inside the image)."""
    rows, columns = bounding_box(mask)
    return (slice(max(rows.start - margin, 0), rows.stop + margin),
            slice(max(columns.start - margin, 0), columns.stop + margin))
