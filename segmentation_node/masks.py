"""Binary masks in the wire format (uncompressed COCO RLE, see msg/MaskRLE.msg) and in COCO's
compressed RLE (pycocotools). ROS-free."""
from __future__ import annotations

import numpy as np
from pycocotools import mask as coco_mask


def rle_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts of a 2-D boolean mask: column-major runs, background first."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    boundaries = np.concatenate(([0], change, [flat.size]))
    counts = np.diff(boundaries).tolist()
    if flat.size and flat[0]:
        counts.insert(0, 0)  # runs always start with background
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
