"""The classical channel: no neural network, CPU-cheap, independent of SAM3.

- `BackgroundModel`: per view, the empty cell (median of a few frames) and change detection
  with a global gain so dimmed lights are not "change".
- `intrusion_regions`: changed regions that leave the pick zone or are far larger than any
  part: "unknown object in the cell". The pipeline's intrusion monitor (perception/intrusion.py)
  runs it beside every backend: a forbidden-region source that no model output can silence.
- `ColorClassifier`: a colour lookup table learned from labelled pixels (the synthetic ground
  truth), with per-class size priors: the shape half of the "colour/shape" classifier.
- `ClassicalBackend`: the colour classifier and the change behind the SegmentationBackend
  interface, the CPU backend of the demo on the synthetic scene; one backend among others.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from segmentation_node.atomic_io import atomic_write_bytes
from segmentation_node.masks import BoxedMask, bounding_box
from segmentation_node.perception.types import CameraFrame, Detection, Prompt

DEFECT_CLASS = "defect"
BACKGROUND_CLASS = "background"
_BITS = 5  # colour quantisation: 32 levels per channel
_DEFECT_PIXELS = 4  # without learned bands: this many defect-coloured interior pixels is a defect


def _quantize(image: np.ndarray) -> np.ndarray:
    """Colour cell of each pixel (uint16: 15 bits), shifted in 8 bits before widening."""
    q = image >> (8 - _BITS)
    return (q[..., 0].astype(np.uint16) << (2 * _BITS)) | (q[..., 1].astype(np.uint16) << _BITS) | q[..., 2]


def _components(mask: np.ndarray, min_area: int, box: tuple[slice, slice] | None = None,
                view_shape: tuple[int, int] | None = None) -> list[BoxedMask]:
    """8-connected components of at least `min_area` pixels, each cut from its own stats box.
    `mask` covers `box` of a view of `view_shape` (default: it is the whole view)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    top, left = (0, 0) if box is None else (box[0].start, box[1].start)
    shape = mask.shape if view_shape is None else view_shape
    pieces = []
    for index in range(1, count):
        x, y, width, height, area = stats[index]
        if area >= min_area:
            pieces.append(BoxedMask(labels[y:y + height, x:x + width] == index, top + y, left + x, shape))
    return pieces


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
        spread = np.max([_difference(frame, median, _gain(frame, median)) for frame in stack], axis=0)
        return cls(median, spread.astype(np.float32), threshold)

    def foreground(self, image: np.ndarray) -> np.ndarray:
        """Changed pixels: largest channel difference beyond threshold + spread, opened by 3x3.

        What survives the opening is made of 3x3 blocks of changed pixels, and every such block
        holds a pixel of even row and even column: the test runs on those first (a quarter of
        the view), then exactly, only in their box grown by the 2 pixels a block reaches. The
        box's outer rows and columns are even ones beyond the coarse change, so no three pixels
        in a row change there, and opening the box alone (OpenCV counts its outside as
        changed, as it does outside the image) gives the same pixels as opening the view."""
        if image.shape != self.median.shape:
            raise ValueError(f"image {image.shape} does not match the background {self.median.shape}")
        smooth = cv2.GaussianBlur(image.astype(np.float32), (5, 5), 0)
        gain = _gain(smooth, self.median)
        foreground = np.zeros(image.shape[:2], bool)
        found = bounding_box(self._changed(smooth, gain, (slice(None, None, 2), slice(None, None, 2))))
        if found is None:
            return foreground
        box = _grown((slice(2 * found[0].start, 2 * found[0].stop - 1),
                      slice(2 * found[1].start, 2 * found[1].stop - 1)), 2, foreground.shape)
        opened = cv2.morphologyEx(self._changed(smooth, gain, box).view(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        foreground[box] = opened.view(bool)
        return foreground

    def _changed(self, smooth: np.ndarray, gain: float, region: tuple[slice, slice]) -> np.ndarray:
        return _difference(smooth[region], self.median[region], gain) > self.threshold + self.spread[region]


_GAIN_STRIDE = 4  # the global gain is a median over every 4th pixel of every 4th row


def _gain(smooth: np.ndarray, median: np.ndarray) -> float:
    """One global gain, which absorbs the lights being dimmed; one number, estimated on a grid."""
    grid = (slice(None, None, _GAIN_STRIDE), slice(None, None, _GAIN_STRIDE))
    return float(np.median(_channel_sum(smooth[grid]) / (_channel_sum(median[grid]) + 1.0)))


def _difference(smooth: np.ndarray, median: np.ndarray, gain: float) -> np.ndarray:
    """Largest channel difference after the gain. Channels are combined with element-wise
    operations, not numpy reductions over the last axis (several times slower on H x W x 3)."""
    difference = cv2.absdiff(np.ascontiguousarray(smooth), np.ascontiguousarray(median) * np.float32(gain))
    return np.maximum(np.maximum(difference[..., 0], difference[..., 1]), difference[..., 2])


def _channel_sum(image: np.ndarray) -> np.ndarray:
    return image[..., 0] + image[..., 1] + image[..., 2]


def intrusion_regions(foreground: np.ndarray, zone: np.ndarray, max_part_area: int,
                      min_area: int = 40) -> list[BoxedMask]:
    """Changed regions that reach outside the pick zone or are much larger than a part."""
    box = bounding_box(foreground)
    if box is None:
        return []
    return [component for component in _components(foreground[box], min_area, box, foreground.shape)
            if component.area - np.count_nonzero(component.within(zone)) >= min_area
            or component.area > 3 * max_part_area]


# --- colour / shape classifier -------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ColorClassifier:
    classes: tuple[str, ...]       # index 0 is BACKGROUND_CLASS
    table: np.ndarray              # quantised colour -> class index (uint8)
    confidence: np.ndarray         # quantised colour -> posterior of that class (float32)
    typical_area: dict[str, float]  # median instance area per class in the training views
    # Per part class, (below, above) in defect-coloured interior pixels: fewer than `below` is
    # surely intact, more than `above` surely defective, in between undecided (training views).
    defect_bands: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def fit(cls, images: Sequence[np.ndarray], label_maps: Sequence[np.ndarray], classes: Sequence[str],
            typical_area: dict[str, float]) -> "ColorClassifier":
        """Learn from RGB images and per-pixel class indices into `classes` (0 = background)."""
        cells = 1 << (3 * _BITS)
        counts = np.zeros((len(classes), cells), dtype=np.float64)
        for image, labels in zip(images, label_maps):
            index = _quantize(image).ravel().astype(np.int64) * len(classes) + labels.ravel()
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

    @classmethod
    def untrained(cls) -> "ColorClassifier":
        """No colour learned (a cell commissioned from a recording): every pixel is background."""
        cells = 1 << (3 * _BITS)
        return cls((BACKGROUND_CLASS,), np.zeros(cells, np.uint8), np.zeros(cells, np.float32), {})

    def defect_verdict(self, label: str, defect_pixels: int) -> bool | None:
        """True: defective, False: intact, None: undecided (between the class's bands)."""
        below, above = self.defect_bands.get(label, (_DEFECT_PIXELS, _DEFECT_PIXELS - 1))
        if defect_pixels < below:
            return False
        return True if defect_pixels > above else None

    def predict(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class index and colour cell per pixel; `confidence[cells]` wherever a score is needed."""
        cells = _quantize(image)
        return np.take(self.table, cells), cells

    def index(self, name: str) -> int:
        return self.classes.index(name)

    def save(self, path: Path) -> None:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, classes=np.array(self.classes), table=self.table, confidence=self.confidence,
                            area_names=np.array(list(self.typical_area)),
                            area_values=np.array(list(self.typical_area.values()), dtype=np.float64),
                            band_names=np.array(list(self.defect_bands), dtype=str),
                            band_values=np.array(list(self.defect_bands.values()), dtype=np.float64).reshape(-1, 2))
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> "ColorClassifier":
        with np.load(path) as data:
            bands = dict(zip((str(n) for n in data["band_names"]), map(tuple, data["band_values"].tolist()))) \
                if "band_names" in data else {}
            return cls(tuple(str(c) for c in data["classes"]), data["table"], data["confidence"],
                       dict(zip((str(n) for n in data["area_names"]), data["area_values"].tolist())), bands)


# --- the backend ---------------------------------------------------------------------------------
class ClassicalBackend:
    """Colour/shape classifier + change detection. Stateless between frames: tracking is done
    downstream, so every call is a keyframe."""

    name = "classical"

    def __init__(self, classifier: ColorClassifier, backgrounds: dict[str, BackgroundModel],
                 split_parts: Sequence[str] = (), static_classes: Sequence[str] = ()):
        self.classifier = classifier
        self.backgrounds = backgrounds
        self.split_parts = set(split_parts)  # classes whose touching instances are split apart
        # Classes recorded in the empty cell (fixtures) are found by colour alone; every other
        # class must also have changed the scene, so a brightly lit table is never a "hand".
        self.static_classes = set(static_classes)
        self.model_version = f"classical-{len(classifier.classes)}classes"

    def reset(self) -> None:
        """Nothing to forget: every frame is processed on its own."""

    def process(self, views: Sequence[CameraFrame], prompts: Sequence[Prompt], keyframe: bool = True) -> list[list[Detection]]:
        labels = [label for label in dict.fromkeys(p.label for p in prompts) if label in self.classifier.classes]
        return [self._process_view(view, labels) if labels else [] for view in views]

    def _process_view(self, view: CameraFrame, labels: Sequence[str]) -> list[Detection]:
        background = self.backgrounds.get(view.camera)
        if background is None:
            raise KeyError(f"camera '{view.camera}' has no background model; known: {', '.join(self.backgrounds)}")
        classes, cells = self.classifier.predict(view.image)
        # The pipeline's intrusion monitor has already worked out the change for this view.
        foreground = background.foreground(view.image) if view.changed is None else view.changed
        shape = classes.shape
        defect = classes == self.classifier.index(DEFECT_CLASS) if DEFECT_CLASS in self.classifier.classes \
            else np.zeros(shape, bool)
        detections, seeds = [], []  # seeds: (piece, label, cut near a defect)
        near_change, edges = _grow(foreground, 2), None  # edges: only once a part class needs them
        # Classes that must have changed the scene can only be found near the change: their
        # masks and components are worked out in its box (a fifth to a third of the view here).
        changed_box = _box_around(near_change, margin=3) if near_change.any() else None
        whole = (slice(0, shape[0]), slice(0, shape[1]))
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
            pieces = _components(mask, max(12, int(0.15 * typical)), box, shape)
            if label not in self.split_parts:
                detections += [Detection(p, self._score(cells, p), label) for p in pieces]
                continue
            edges = _edges(view.image) if edges is None else edges
            for component in pieces:
                split = _split_touching(component, typical, edges)
                # A cut may run along a scratch: then a piece without defect pixels may be the
                # rest of a defective part, and its verdict on defects is no verdict.
                cut_near_defect = len(split) > 1 and component.within(defect).any()
                for piece in split:
                    seeds.append((piece, label, cut_near_defect))
        if seeds:  # seeds lie in the changed box; outside it nothing changed
            grow_into = np.zeros(shape, bool)
            grow_into[changed_box] = foreground[changed_box] & ~np.isin(
                classes[changed_box], [self.classifier.index(d.label) for d in detections])
            completed = _complete([seed for seed, _, _ in seeds], grow_into, view.image)
            for piece, (_, label, cut_near_defect) in zip(completed, seeds):
                verdict = self.classifier.defect_verdict(label, defect_pixels(piece, defect))
                if cut_near_defect and verdict is False:
                    verdict = None
                detections.append(Detection(piece, self._score(cells, piece), label,
                                            attributes=("defective",) if verdict else (),
                                            uncertain=("defective",) if verdict is None else ()))
        return detections

    def _score(self, cells: np.ndarray, mask: BoxedMask) -> float:
        """Mean colour confidence over the mask."""
        return float(np.clip(np.take(self.classifier.confidence, cells[mask.box][mask.crop]).mean(), 0.0, 1.0))


def _grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    size = 2 * pixels + 1
    return cv2.dilate(mask.astype(np.uint8), np.ones((size, size), np.uint8)).astype(bool)


def defect_pixels(piece: BoxedMask, defect: np.ndarray) -> int:
    """Defect-coloured pixels inside the part, away from its rim (2 pixels)."""
    box = _grown(piece.box, 2, piece.shape)
    interior = cv2.erode(piece.crop_to(box).view(np.uint8), np.ones((5, 5), np.uint8)).view(bool)
    return int(np.count_nonzero(interior & defect[box]))


def _edges(image: np.ndarray) -> np.ndarray:
    gray = cv2.GaussianBlur(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (3, 3), 0)
    return cv2.dilate(cv2.Canny(gray, 30, 90), np.ones((2, 2), np.uint8)).astype(bool)


def _complete(seeds: list[BoxedMask], changed: np.ndarray, image: np.ndarray) -> list[BoxedMask]:
    """Grow part seeds (pixels whose colour says "part") over the changed pixels next to them:
    shaded sides and rims of a part have no part colour but are part of its silhouette."""
    shape = changed.shape
    # All the work is in the seeds' box grown by their reach (4) and a margin (2).
    work = _grown((slice(min(s.top for s in seeds), max(s.box[0].stop for s in seeds)),
                   slice(min(s.left for s in seeds), max(s.box[1].stop for s in seeds))), 6, shape)
    seeded = np.zeros(changed[work].shape, bool)
    for seed in seeds:
        seeded |= seed.crop_to(work)
    reach = changed[work] & _grow(seeded, 4)
    # Everything outside `reach` is a fixed marker, so the flood is decided inside its box.
    inner = _box_around(reach | seeded)
    box = (slice(work[0].start + inner[0].start, work[0].start + inner[0].stop),
           slice(work[1].start + inner[1].start, work[1].start + inner[1].stop))
    reach = reach[inner]
    markers = np.zeros(reach.shape, np.int32)
    markers[~reach] = len(seeds) + 1
    for index, seed in enumerate(seeds, start=1):
        markers[seed.crop_to(box)] = index
    cv2.watershed(np.ascontiguousarray(image[box]), markers)
    return [BoxedMask.from_crop(seed.crop_to(box) | ((markers == index) & reach), box, shape)
            for index, seed in enumerate(seeds, start=1)]


def _split_touching(component: BoxedMask, typical_area: float, edges: np.ndarray) -> list[BoxedMask]:
    """Split a blob of touching same-class parts. Seeds are the pieces left when image edges
    (the rim of a part lying on another) are cut out; failing that, the peaks of the distance
    transform (two round parts side by side). A watershed grows the seeds back to the blob."""
    if component.area < 1.3 * typical_area:
        return [component]  # one part: its own edges (a scratch, a highlight) must not cut it
    box = _grown(component.box, 2, component.shape)  # the blob and a ring of background
    blob = component.crop_to(box)
    cores = _components(blob & ~edges[box], max(8, int(0.25 * typical_area)))
    if len(cores) < 2:
        distance = cv2.distanceTransform(blob.astype(np.uint8), cv2.DIST_L2, 5)
        cores = _components(distance > 0.6 * distance.max(), 1)
        if len(cores) < 2:
            return [component]
    markers = np.zeros(blob.shape, np.int32)
    for index, core in enumerate(cores, start=1):
        core.paint(markers, index)
    markers[~blob] = len(cores) + 1  # everything outside is one extra "background" seed
    cv2.watershed(np.dstack([blob.astype(np.uint8) * 255] * 3), markers)
    pieces = [BoxedMask.from_crop((markers == index) & blob, box, component.shape)
              for index in range(1, len(cores) + 1)]
    return [piece for piece in pieces if piece.area]


def _grown(box: tuple[slice, slice], margin: int, shape: tuple[int, int]) -> tuple[slice, slice]:
    """`box` (rows, columns) grown by `margin` pixels, inside a view of `shape`."""
    return (slice(max(box[0].start - margin, 0), min(box[0].stop + margin, shape[0])),
            slice(max(box[1].start - margin, 0), min(box[1].stop + margin, shape[1])))


def _box_around(mask: np.ndarray, margin: int = 2) -> tuple[slice, slice]:
    """The non-empty mask's bounding box grown by `margin` pixels (inside the image)."""
    return _grown(bounding_box(mask), margin, mask.shape)
