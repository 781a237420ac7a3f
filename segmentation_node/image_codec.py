"""sensor_msgs/Image <-> numpy without ROS: a view of the message buffer for every encoding the
node accepts, converted to RGB by one table, with clear errors for anything else. Works on any
object with the Image fields (rclpy messages, rosbags messages). cv_bridge is used instead
where installed, for the encodings it converts the same way (the 8-bit RGB family).

Encodings (ROS names, sensor_msgs/image_encodings.hpp): rgb8, bgr8, rgba8, bgra8, mono8;
mono16 and 16-bit Bayer to 8 bits by keeping the high byte (a fixed shift: the same pixel
value gives the same colour in every frame); Bayer rggb / bggr / gbrg / grbg (8 and 16 bit)
demosaiced by OpenCV; yuv422 (UYVY) and yuv422_yuy2 (YUYV) by OpenCV's BT.601 video-range
conversion (as cv_bridge does).
16-bit images may be big-endian."""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np


def _as_is(pixels: np.ndarray) -> np.ndarray:
    return pixels  # rgb8: the view itself, no copy


def _high_byte(pixels: np.ndarray) -> np.ndarray:
    return (pixels >> 8).astype(np.uint8) if pixels.dtype != np.uint8 else pixels


def _opencv(code: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda pixels: cv2.cvtColor(np.ascontiguousarray(_high_byte(pixels)), code)


# OpenCV names a Bayer pattern by the second row's second and third pixels, ROS by the first
# 2x2 block read row by row: ROS rggb is OpenCV BG (as cv_bridge maps them).
_BAYER = {"rggb": cv2.COLOR_BayerBG2RGB, "bggr": cv2.COLOR_BayerRG2RGB,
          "gbrg": cv2.COLOR_BayerGR2RGB, "grbg": cv2.COLOR_BayerGB2RGB}

# encoding -> (channels, dtype, conversion of the view to H x W x 3 uint8 RGB)
_ENCODINGS = {
    "rgb8": (3, np.uint8, _as_is),
    "bgr8": (3, np.uint8, _opencv(cv2.COLOR_BGR2RGB)),
    "rgba8": (4, np.uint8, _opencv(cv2.COLOR_RGBA2RGB)),
    "bgra8": (4, np.uint8, _opencv(cv2.COLOR_BGRA2RGB)),
    "mono8": (1, np.uint8, _opencv(cv2.COLOR_GRAY2RGB)),
    "mono16": (1, np.uint16, _opencv(cv2.COLOR_GRAY2RGB)),
    "yuv422": (2, np.uint8, _opencv(cv2.COLOR_YUV2RGB_UYVY)),
    "yuv422_yuy2": (2, np.uint8, _opencv(cv2.COLOR_YUV2RGB_YUYV)),
    **{f"bayer_{pattern}{bits}": (1, dtype, _opencv(code)) for pattern, code in _BAYER.items()
       for bits, dtype in (("8", np.uint8), ("16", np.uint16))},
}
SUPPORTED_ENCODINGS = tuple(_ENCODINGS)
CV_BRIDGE_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")  # converted alike by cv_bridge


class ImageError(ValueError):
    """The image cannot be used; the message says why in terms of the message fields."""


def check_format(message, expected_hw: tuple[int, int] | None = None) -> str | None:
    """Why the image cannot be used, or None: the rules of view() plus the calibrated size
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
    pixels = rows.view(np.dtype(dtype).newbyteorder(">") if message.is_bigendian else dtype)
    pixels = pixels.reshape(height, width, channels)
    return pixels[..., 0] if channels == 1 else pixels


def _layout(message, expected_hw: tuple[int, int] | None = None) -> tuple[int, type, int]:
    """(channels, dtype, bytes of pixels per row) of a usable image; ImageError says why not."""
    encoding = message.encoding.lower()
    if encoding not in _ENCODINGS:
        raise ImageError(f"unsupported encoding '{message.encoding}'; supported: {', '.join(SUPPORTED_ENCODINGS)}")
    channels, dtype, _ = _ENCODINGS[encoding]
    height, width, step = int(message.height), int(message.width), int(message.step)
    row_bytes = width * channels * np.dtype(dtype).itemsize
    if height == 0 or width == 0:
        raise ImageError(f"empty image {width}x{height}")
    if expected_hw is not None and (height, width) != tuple(expected_hw):
        raise ImageError(f"image is {width}x{height}, this camera is calibrated for {expected_hw[1]}x{expected_hw[0]}")
    if step < row_bytes:
        raise ImageError(f"step {step} is smaller than a row of {width} {encoding} pixels ({row_bytes} bytes)")
    if len(message.data) < step * height:
        raise ImageError(f"data has {len(message.data)} bytes, {width}x{height} {encoding} with step {step} "
                         f"needs {step * height}")
    return channels, dtype, row_bytes


def to_rgb(message) -> np.ndarray:
    """H x W x 3 uint8 RGB for the model (a view when the message already is rgb8)."""
    pixels = view(message)  # validates the encoding first
    return _ENCODINGS[message.encoding.lower()][2](pixels)


def fields_of(array: np.ndarray, encoding: str) -> dict:
    """Image message fields for a mono8 / mono16 / rgb8 array (little-endian)."""
    array = np.ascontiguousarray(array)
    expected = {"mono8": (2, np.uint8), "mono16": (2, np.uint16), "rgb8": (3, np.uint8)}
    if encoding not in expected or array.ndim != expected[encoding][0] or array.dtype != expected[encoding][1]:
        raise ImageError(f"cannot encode a {array.dtype} array of shape {array.shape} as {encoding}")
    return {"height": array.shape[0], "width": array.shape[1], "encoding": encoding, "is_bigendian": 0,
            "step": array.strides[0], "data": array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()}
