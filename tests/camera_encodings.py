"""RGB pictures packed into every camera encoding the node accepts, written here from the
encodings' definitions (not with OpenCV's conversions, which the node uses to unpack them)."""
from __future__ import annotations

import numpy as np

# ROS Bayer names read the first 2x2 block row by row.
BAYER_PATTERNS = ("rggb", "bggr", "gbrg", "grbg")
_CHANNEL = {"r": 0, "g": 1, "b": 2}


def mosaic(rgb: np.ndarray, pattern: str, bits: int = 8) -> np.ndarray:
    """Each pixel keeps the one colour the pattern samples there; 16 bit: value * 257."""
    out = np.zeros(rgb.shape[:2], np.uint16 if bits == 16 else np.uint8)
    for index, letter in enumerate(pattern):
        row, column = divmod(index, 2)
        samples = rgb[row::2, column::2, _CHANNEL[letter]].astype(out.dtype)
        out[row::2, column::2] = samples * 257 if bits == 16 else samples
    return out


def yuv422(rgb: np.ndarray, order: str) -> np.ndarray:
    """BT.601 video range, U on even and V on odd pixels; order "UYVY" (ROS yuv422) or "YUYV"
    (yuv422_yuy2). H x W x 2 bytes."""
    r, g, b = (rgb[..., index].astype(np.float64) for index in range(3))
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    packed = np.zeros((*rgb.shape[:2], 2), np.uint8)
    even = np.arange(rgb.shape[1]) % 2 == 0
    packed[..., 0 if order == "YUYV" else 1] = np.clip(np.round(y), 0, 255)
    packed[..., 1 if order == "YUYV" else 0] = np.clip(np.round(np.where(even, u, v)), 0, 255)
    return packed


def encode(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """The pixel array of `rgb` in `encoding` (little-endian for 16 bit)."""
    grey = np.round(rgb.astype(np.float64) @ [0.299, 0.587, 0.114]).astype(np.uint8)
    opaque = np.full(rgb.shape[:2], 255, np.uint8)
    simple = {"rgb8": lambda: rgb, "bgr8": lambda: rgb[..., ::-1], "rgba8": lambda: np.dstack([rgb, opaque]),
              "bgra8": lambda: np.dstack([rgb[..., ::-1], opaque]), "mono8": lambda: grey,
              "mono16": lambda: grey.astype(np.uint16) * 257,
              "yuv422": lambda: yuv422(rgb, "UYVY"), "yuv422_yuy2": lambda: yuv422(rgb, "YUYV")}
    if encoding in simple:
        return np.ascontiguousarray(simple[encoding]())
    rest = encoding.removeprefix("bayer_")
    return mosaic(rgb, rest[:4], int(rest[4:]))
