"""Binary masks in the wire format (uncompressed COCO RLE, see msg/MaskRLE.msg) and in COCO's
compressed RLE (pycocotools). ROS-free."""
from __future__ import annotations

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


def coco_rle(mask: np.ndarray) -> dict:
    """COCO JSON segmentation of a mask: {"size": [h, w], "counts": compressed string}."""
    encoded = coco_mask.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}
