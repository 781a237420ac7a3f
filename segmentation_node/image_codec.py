"""sensor_msgs/Image <-> numpy without ROS: a zero-copy view of the message buffer for every
encoding the node accepts, with clear errors for anything else. Works on any object with the
Image fields (rclpy messages, rosbags messages). cv_bridge is used instead where installed."""
from __future__ import annotations

import numpy as np

# encoding -> (channels, dtype, index order to reach RGB; None = single channel)
_ENCODINGS = {
    "rgb8": (3, np.uint8, (0, 1, 2)),
    "bgr8": (3, np.uint8, (2, 1, 0)),
    "rgba8": (4, np.uint8, (0, 1, 2)),
    "bgra8": (4, np.uint8, (2, 1, 0)),
    "mono8": (1, np.uint8, None),
}
SUPPORTED_ENCODINGS = tuple(_ENCODINGS)


class ImageError(ValueError):
    """The image cannot be used; the message says why in terms of the message fields."""


def check_format(message, expected_hw: tuple[int, int] | None = None) -> str | None:
    """Why the image cannot be used, or None: the rules of view() plus the commissioned size
    (rows, columns) when given. Reads the message fields only, never the pixels: cheap enough
    for a subscription callback at any resolution."""
    try:
        _layout(message, expected_hw)
    except ImageError as error:
        return str(error)
    return None


def view(message) -> np.ndarray:
    """H x W (x C) view of the message data, no copy; validates encoding, step and length."""
    channels, dtype, row_bytes = _layout(message)
    height, width, step = int(message.height), int(message.width), int(message.step)
    data = np.frombuffer(message.data, dtype=np.uint8)
    rows = data[:step * height].reshape(height, step)[:, :row_bytes]
    pixels = rows.view(dtype).reshape(height, width, channels)
    return pixels[..., 0] if channels == 1 else pixels


def _layout(message, expected_hw: tuple[int, int] | None = None) -> tuple[int, type, int]:
    """(channels, dtype, bytes of pixels per row) of a usable image; ImageError says why not."""
    encoding = message.encoding.lower()
    if encoding not in _ENCODINGS:
        raise ImageError(f"unsupported encoding '{message.encoding}'; supported: {', '.join(SUPPORTED_ENCODINGS)}")
    channels, dtype, _ = _ENCODINGS[encoding]
    if message.is_bigendian and np.dtype(dtype).itemsize > 1:
        raise ImageError("big-endian images are not supported")
    height, width, step = int(message.height), int(message.width), int(message.step)
    row_bytes = width * channels * np.dtype(dtype).itemsize
    if height == 0 or width == 0:
        raise ImageError(f"empty image {width}x{height}")
    if expected_hw is not None and (height, width) != tuple(expected_hw):
        raise ImageError(f"image is {width}x{height}, this camera is commissioned at {expected_hw[1]}x{expected_hw[0]}")
    if step < row_bytes:
        raise ImageError(f"step {step} is smaller than a row of {width} {encoding} pixels ({row_bytes} bytes)")
    if len(message.data) < step * height:
        raise ImageError(f"data has {len(message.data)} bytes, {width}x{height} {encoding} with step {step} "
                         f"needs {step * height}")
    return channels, dtype, row_bytes


def to_rgb(message) -> np.ndarray:
    """H x W x 3 uint8 RGB for the model (a view when the message already is rgb8)."""
    pixels = view(message)
    order = _ENCODINGS[message.encoding.lower()][2]
    if order is None:
        return np.repeat(pixels[..., None], 3, axis=2)
    if order == (0, 1, 2) and pixels.shape[2] == 3:
        return pixels
    return np.ascontiguousarray(pixels[..., list(order)])


def fields_of(array: np.ndarray, encoding: str) -> dict:
    """Image message fields for a mono8 / mono16 / rgb8 array (little-endian)."""
    array = np.ascontiguousarray(array)
    expected = {"mono8": (2, np.uint8), "mono16": (2, np.uint16), "rgb8": (3, np.uint8)}
    if encoding not in expected or array.ndim != expected[encoding][0] or array.dtype != expected[encoding][1]:
        raise ImageError(f"cannot encode a {array.dtype} array of shape {array.shape} as {encoding}")
    return {"height": array.shape[0], "width": array.shape[1], "encoding": encoding, "is_bigendian": 0,
            "step": array.strides[0], "data": array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()}
