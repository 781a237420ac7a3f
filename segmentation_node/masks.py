"""Binary masks in the wire format (uncompressed COCO RLE, see msg/MaskRLE.msg) and in COCO's
compressed RLE (pycocotools). ROS-free."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from pycocotools import mask as coco_mask


def bounding_box(mask: np.ndarray) -> tuple[slice, slice] | None:
    """(rows, columns) slices of the smallest box holding the mask; None for an empty mask.
    Work on the box instead of the image: a part is a small share of a 1280x720 view."""
    columns = np.flatnonzero(mask.any(axis=0))
    if columns.size == 0:
        return None
    rows = np.flatnonzero(mask[:, columns[0]:columns[-1] + 1].any(axis=1))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(columns[0]), int(columns[-1]) + 1)


def box_xywh(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x, y, width, height) of the mask's bounding box, COCO's and RegionOfInterest's order;
    zeros for an empty mask."""
    box = bounding_box(mask)
    if box is None:
        return 0, 0, 0, 0
    rows, columns = box
    return columns.start, rows.start, columns.stop - columns.start, rows.stop - rows.start


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return _boxed_iou(a, _boxed(a), b, _boxed(b))


def greedy_match(first: Sequence[np.ndarray], second: Sequence[np.ndarray], min_iou: float,
                 may_pair: Callable[[int, int], bool] = lambda i, j: True) -> list[tuple[int, int, float]]:
    """One-to-one pairs (index in first, index in second, IoU) by mask IoU, best first, each at
    least min_iou; `may_pair(i, j)` rules pairs out before any IoU is computed (other class).

    Each mask is scanned once for its box and area; a pair costs nothing when the boxes do not
    meet and only their overlap otherwise (most pairs of a view are different objects)."""
    boxed_first, boxed_second = [_boxed(mask) for mask in first], [_boxed(mask) for mask in second]
    pairs = sorted(((iou, i, j) for i, a in enumerate(boxed_first) for j, b in enumerate(boxed_second)
                    if may_pair(i, j) and (iou := _boxed_iou(first[i], a, second[j], b)) >= min_iou), reverse=True)
    used_first, used_second, matches = set(), set(), []
    for iou, i, j in pairs:
        if i not in used_first and j not in used_second:
            used_first.add(i)
            used_second.add(j)
            matches.append((i, j, iou))
    return matches


def _boxed(mask: np.ndarray) -> tuple[tuple[slice, slice] | None, int]:
    box = bounding_box(mask)
    return box, (0 if box is None else int(np.count_nonzero(mask[box])))


def _boxed_iou(a: np.ndarray, boxed_a, b: np.ndarray, boxed_b) -> float:
    (box_a, area_a), (box_b, area_b) = boxed_a, boxed_b
    if box_a is None or box_b is None:
        return 0.0
    rows = slice(max(box_a[0].start, box_b[0].start), min(box_a[0].stop, box_b[0].stop))
    columns = slice(max(box_a[1].start, box_b[1].start), min(box_a[1].stop, box_b[1].stop))
    if rows.start >= rows.stop or columns.start >= columns.stop:
        return 0.0
    inter = int(np.count_nonzero(a[rows, columns] & b[rows, columns]))
    return inter / (area_a + area_b - inter)


def rle_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts of a 2-D boolean mask: column-major runs, background first.

    Only the columns the mask touches are scanned: the columns before and after are one
    background run each, which is most of the image for a part."""
    mask = np.asarray(mask, dtype=bool)
    height, width = mask.shape
    box = bounding_box(mask)
    if box is None:
        return [height * width]
    first, last = box[1].start, box[1].stop
    flat = mask[:, first:last].ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate(([0], change, [flat.size]))).tolist()
    if flat[0]:
        counts.insert(0, 0)  # runs always start with background
    counts[0] += first * height
    trailing = (width - last) * height
    if trailing:
        if flat[-1]:
            counts.append(trailing)
        else:
            counts[-1] += trailing
    return counts


def mask_from_counts(counts, height: int, width: int) -> np.ndarray:
    """Inverse of rle_counts; ValueError if the counts do not cover height x width exactly."""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() != height * width or (counts < 0).any():
        raise ValueError(f"RLE counts sum to {int(counts.sum())}, expected {height}x{width}={height * width}")
    values = np.zeros(counts.size, dtype=bool)
    values[1::2] = True
    return np.repeat(values, counts).reshape((height, width), order="F")


def label_image(shape: tuple[int, int], masks) -> np.ndarray:
    """uint16 image, pixel = 1 + index of the mask holding it, 0 = none (target_labels). The
    pipeline makes a view's target masks disjoint, so each mask is exactly its value here."""
    labels = np.zeros(shape, np.uint16)
    for value, mask in enumerate(masks, start=1):
        labels[mask] = value
    return labels


def coco_mask_fields(mask: np.ndarray) -> dict:
    """The mask part of a COCO annotation: segmentation (compressed RLE), area, bbox."""
    return {"segmentation": coco_rle(mask), "area": int(np.count_nonzero(mask)), "bbox": list(box_xywh(mask))}


def coco_rle(mask: np.ndarray) -> dict:
    """COCO JSON segmentation of a mask: {"size": [h, w], "counts": compressed string}."""
    encoded = coco_mask.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}
