"""Binary masks in the wire format (uncompressed COCO RLE, see msg/MaskRLE.msg) and in COCO's
compressed RLE (pycocotools, imported only where COCO files are written: rosdep has no key for
it, so the nodes must start without it). ROS-free."""
from __future__ import annotations

from typing import Callable, Sequence

import cv2
import numpy as np


def bounding_box(mask: np.ndarray) -> tuple[slice, slice] | None:
    """(rows, columns) slices of the smallest box holding the mask; None for an empty mask.
    Work on the box instead of the image: a part is a small share of a 1280x720 view."""
    columns = np.flatnonzero(mask.any(axis=0))
    if columns.size == 0:
        return None
    rows = np.flatnonzero(mask[:, columns[0]:columns[-1] + 1].any(axis=1))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(columns[0]), int(columns[-1]) + 1)


class BoxedMask:
    """A binary mask of one view, carried as its bounding box and the crop inside it.

    A part is a small share of a 1280x720 view: area, IoU, centroid and RLE are computed from
    the crop, two masks whose boxes do not meet cost nothing to compare, and a full-frame array
    exists only where an image is published (`paint`, `to_array`). The box is always tight
    (the crop touches all four sides); an empty mask has a 0x0 crop."""

    __slots__ = ("crop", "top", "left", "shape", "area")

    def __init__(self, crop: np.ndarray, top: int, left: int, shape: tuple[int, int]):
        """`crop` placed with its top-left corner at (top, left) in a view of `shape`; trimmed
        to its own bounding box."""
        crop = np.asarray(crop, dtype=bool)
        box = bounding_box(crop)
        if box is None:
            crop, top, left = np.zeros((0, 0), bool), 0, 0
        elif box[0].stop - box[0].start != crop.shape[0] or box[1].stop - box[1].start != crop.shape[1]:
            crop, top, left = crop[box], top + box[0].start, left + box[1].start
        if top < 0 or left < 0 or top + crop.shape[0] > shape[0] or left + crop.shape[1] > shape[1]:
            raise ValueError(f"a {crop.shape} crop at ({top}, {left}) is not inside a {tuple(shape)} view")
        self.crop, self.top, self.left = crop, int(top), int(left)
        self.shape = (int(shape[0]), int(shape[1]))
        self.area = int(np.count_nonzero(crop))

    @classmethod
    def from_array(cls, mask: np.ndarray) -> "BoxedMask":
        """From a full-frame mask (the crop is a copy: the frame is not kept alive)."""
        mask = np.asarray(mask, dtype=bool)
        box = bounding_box(mask)
        if box is None:
            return cls(np.zeros((0, 0), bool), 0, 0, mask.shape)
        return cls(mask[box].copy(), box[0].start, box[1].start, mask.shape)

    @classmethod
    def from_logits(cls, logits: np.ndarray, height: int, width: int) -> "BoxedMask":
        """`logits > 0` after a bilinear resize of low-resolution mask logits (h x w) to the view's
        height x width, as torch's interpolate (align_corners=False) computes it; computed only
        where the resized logits can be positive: next to the positive low-resolution cells."""
        logits = np.asarray(logits, dtype=np.float32)
        positive = logits > 0
        rows, columns = np.flatnonzero(positive.any(axis=1)), np.flatnonzero(positive.any(axis=0))
        if rows.size == 0:
            return cls(np.zeros((0, 0), bool), 0, 0, (height, width))
        ys, top, bottom, down = _bilinear_taps(rows[0], rows[-1], logits.shape[0], height)
        xs, left, right, across = _bilinear_taps(columns[0], columns[-1], logits.shape[1], width)
        one = np.float32(1.0)
        upper = (one - across) * logits[np.ix_(top, left)] + across * logits[np.ix_(top, right)]
        lower = (one - across) * logits[np.ix_(bottom, left)] + across * logits[np.ix_(bottom, right)]
        values = (one - down)[:, None] * upper + down[:, None] * lower
        return cls(values > 0, int(ys[0]), int(xs[0]), (height, width))

    @classmethod
    def from_crop(cls, crop: np.ndarray, box: tuple[slice, slice], shape: tuple[int, int]) -> "BoxedMask":
        """A mask worked out inside `box` (rows, columns) of a view of `shape`."""
        return cls(crop, box[0].start or 0, box[1].start or 0, shape)

    @property
    def box(self) -> tuple[slice, slice]:
        """(rows, columns) of the view that hold the crop (empty slices for an empty mask)."""
        return slice(self.top, self.top + self.crop.shape[0]), slice(self.left, self.left + self.crop.shape[1])

    def xywh(self) -> tuple[int, int, int, int]:
        """(x, y, width, height): COCO's and RegionOfInterest's order; zeros when empty."""
        if not self.area:
            return 0, 0, 0, 0
        return self.left, self.top, self.crop.shape[1], self.crop.shape[0]

    def to_array(self) -> np.ndarray:
        full = np.zeros(self.shape, bool)
        self.paint(full, True)
        return full

    def paint(self, canvas: np.ndarray, value) -> None:
        """Set the mask's pixels of a view-sized `canvas` to `value`."""
        canvas[self.box][self.crop] = value

    def crop_to(self, box: tuple[slice, slice]) -> np.ndarray:
        """The mask's pixels inside `box` (rows, columns) of the view, as a box-sized array."""
        out = np.zeros((box[0].stop - box[0].start, box[1].stop - box[1].start), bool)
        rows = slice(max(self.top, box[0].start), min(self.top + self.crop.shape[0], box[0].stop))
        columns = slice(max(self.left, box[1].start), min(self.left + self.crop.shape[1], box[1].stop))
        if rows.start < rows.stop and columns.start < columns.stop:
            out[rows.start - box[0].start:rows.stop - box[0].start, columns.start - box[1].start:
                columns.stop - box[1].start] = self.crop[rows.start - self.top:rows.stop - self.top,
                                                         columns.start - self.left:columns.stop - self.left]
        return out

    def within(self, region: np.ndarray) -> np.ndarray:
        """The mask's pixels of a view-sized `region`, as a crop-sized boolean array."""
        return self.crop & region[self.box]

    def without(self, region: np.ndarray) -> "BoxedMask":
        """This mask less the pixels set in a view-sized boolean `region`."""
        return BoxedMask(self.crop & ~region[self.box], self.top, self.left, self.shape)

    def iou(self, other: "BoxedMask") -> float:
        """Intersection over union: only the overlap of the two boxes is looked at."""
        inter = self.intersection(other)
        return inter / (self.area + other.area - inter) if inter else 0.0

    def intersection(self, other: "BoxedMask") -> int:
        top, left = max(self.top, other.top), max(self.left, other.left)
        bottom = min(self.top + self.crop.shape[0], other.top + other.crop.shape[0])
        right = min(self.left + self.crop.shape[1], other.left + other.crop.shape[1])
        if top >= bottom or left >= right:
            return 0
        mine = self.crop[top - self.top:bottom - self.top, left - self.left:right - self.left]
        theirs = other.crop[top - other.top:bottom - other.top, left - other.left:right - other.left]
        return int(np.count_nonzero(mine & theirs))

    def centroid(self) -> tuple[float, float]:
        """Pixel-centre centroid (x, y) of a non-empty mask."""
        moments = cv2.moments(self.crop.view(np.uint8), binaryImage=True)
        return moments["m10"] / moments["m00"] + self.left + 0.5, moments["m01"] / moments["m00"] + self.top + 0.5

    def rle_counts(self) -> list[int]:
        """Uncompressed COCO RLE counts (msg/MaskRLE.msg): column-major runs, background first.

        Runs are found in the crop only: a run's ends, as indices of the column-major pixel
        sequence of the view, are the crop's row changes shifted to its place."""
        height, width = self.shape
        if not self.area:
            return [height * width]
        rows, columns = self.crop.shape
        padded = np.zeros((columns, rows + 2), bool)  # a background pixel above and below each column
        padded[:, 1:-1] = self.crop.T
        column, row = np.nonzero(padded[:, 1:] != padded[:, :-1])
        ends = (self.left + column) * height + self.top + row
        # A run that reaches the bottom of a column and one that starts the next column are one.
        joined = np.flatnonzero(ends[1:] == ends[:-1])
        ends = np.delete(ends, np.concatenate((joined, joined + 1)))
        counts = np.diff(np.concatenate(([0], ends, [height * width]))).tolist()
        return counts[:-1] if counts[-1] == 0 else counts


def _bilinear_taps(first: int, last: int, size: int, out_size: int):
    """Along one axis: the output pixels whose bilinear sample can reach input cells
    first..last, and for each its two input cells and the weight of the second."""
    scale = np.float32(size / out_size)
    start = max(int(np.floor((first - 0.5) / scale - 0.5)), 0)
    stop = min(int(np.ceil((last + 1.5) / scale - 0.5)) + 1, out_size)
    pixels = np.arange(start, stop)
    source = np.maximum(scale * (pixels.astype(np.float32) + np.float32(0.5)) - np.float32(0.5), np.float32(0.0))
    low = np.minimum(source.astype(np.int64), size - 1)
    high = np.minimum(low + 1, size - 1)
    return pixels, low, high, (source - low).astype(np.float32)


def greedy_match(first: Sequence[BoxedMask], second: Sequence[BoxedMask], min_iou: float,
                 may_pair: Callable[[int, int], bool] = lambda i, j: True) -> list[tuple[int, int, float]]:
    """One-to-one pairs (index in first, index in second, IoU) by mask IoU, best first, each at
    least min_iou; `may_pair(i, j)` rules pairs out before any IoU is computed (other class)."""
    pairs = sorted(((iou, i, j) for i, a in enumerate(first) for j, b in enumerate(second)
                    if may_pair(i, j) and (iou := a.iou(b)) >= min_iou), reverse=True)
    used_first, used_second, matches = set(), set(), []
    for iou, i, j in pairs:
        if i not in used_first and j not in used_second:
            used_first.add(i)
            used_second.add(j)
            matches.append((i, j, iou))
    return matches


def mask_from_counts(counts, height: int, width: int) -> np.ndarray:
    """Inverse of rle_counts; ValueError if the counts do not cover height x width exactly."""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() != height * width or (counts < 0).any():
        raise ValueError(f"RLE counts sum to {int(counts.sum())}, expected {height}x{width}={height * width}")
    values = np.zeros(counts.size, dtype=bool)
    values[1::2] = True
    return np.repeat(values, counts).reshape((height, width), order="F")


def label_image(shape: tuple[int, int], masks: Sequence[BoxedMask]) -> np.ndarray:
    """uint16 image, pixel = 1 + index of the mask holding it, 0 = none (target_labels). The
    pipeline makes a view's target masks disjoint, so each mask is exactly its value here."""
    labels = np.zeros(shape, np.uint16)
    for value, mask in enumerate(masks, start=1):
        mask.paint(labels, value)
    return labels


def coco_mask_fields(mask: BoxedMask) -> dict:
    """The mask part of a COCO annotation: segmentation (compressed RLE), area, bbox."""
    from pycocotools import mask as coco_mask  # only COCO writers need it (module docstring)

    height, width = mask.shape
    encoded = coco_mask.frPyObjects({"size": [height, width], "counts": mask.rle_counts()}, height, width)
    return {"segmentation": {"size": [height, width], "counts": encoded["counts"].decode("ascii")},
            "area": mask.area, "bbox": list(mask.xywh())}
