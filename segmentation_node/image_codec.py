"""sensor_msgs/Image <-> numpy without ROS: a view of the message buffer for every encoding the
node accepts, converted to RGB by one table, with clear errors for anything else. Works on any
object with the Image fields (rclpy messages, rosbags messages). cv_bridge is used instead
where installed, for the encodings it converts the same way (the 8-bit RGB family).

Encodings (ROS names, sensor_msgs/image_encodings.hpp): rgb8, bgr8, rgba8, bgra8, mono8;
mono16 and 16-bit Bayer to 8 bits by a `SixteenBitRule`; Bayer rggb / bggr / gbrg / grbg (8 and
16 bit) demosaiced by OpenCV; yuv422 (UYVY) and yuv422_yuy2 (YUYV) by OpenCV's BT.601
video-range conversion (as cv_bridge does). 16-bit images may be big-endian.

sensor_msgs/CompressedImage (image_transport's `compressed`): JPEG or PNG, decoded by OpenCV
from the bytes (whatever `format` names), 8 or 16 bit, grey or colour."""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np


class ImageError(ValueError):
    """The image cannot be used; the message says why in terms of the message fields."""


class SixteenBitRule:
    """How 16-bit pixels become the model's 8 bits (parameter `sixteen_bit`):
    - `shift:N` (N = 0..8): keep bits N..N+7, saturating above. One pixel value gives one
      colour in every frame. `shift:8` (the default) keeps the high byte: right for data that
      fills 16 bits; `shift:4` for 12-bit sensors, `shift:2` for 10-bit ones (their values sit
      in the low bits, so the high byte would be nearly black).
    - `range`: per frame, its darkest to brightest pixel stretched to 0..255 (contrast follows
      the scene, so colours are not comparable across frames; a flat frame becomes black)."""

    def __init__(self, text: str = "shift:8"):
        self.text = text.strip().lower()
        if self.text == "range":
            self.shift = None
        else:
            kind, _, bits = self.text.partition(":")
            if kind != "shift" or not bits.isdigit() or not 0 <= int(bits) <= 8:
                raise ValueError(f"sixteen_bit must be 'shift:N' with N in 0..8 or 'range'; got '{text}'")
            self.shift = int(bits)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        if pixels.dtype == np.uint8:
            return pixels
        if self.shift is None:
            low, high = int(pixels.min()), int(pixels.max())
            if high == low:
                return np.zeros(pixels.shape, np.uint8)
            return ((pixels.astype(np.float32) - low) * (255.0 / (high - low)) + 0.5).astype(np.uint8)
        return np.minimum(pixels >> self.shift, 255).astype(np.uint8)

    def __repr__(self) -> str:
        return f"SixteenBitRule('{self.text}')"


HIGH_BYTE = SixteenBitRule("shift:8")


def _as_is(pixels: np.ndarray, to_8bit: SixteenBitRule) -> np.ndarray:
    return pixels  # rgb8: the view itself, no copy


def _opencv(code: int) -> Callable[[np.ndarray, SixteenBitRule], np.ndarray]:
    return lambda pixels, to_8bit: cv2.cvtColor(np.ascontiguousarray(to_8bit(pixels)), code)


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
# image_transport's transports and the topic each subscribes under <camera>/.
TRANSPORT_TOPICS = {"raw": "image_raw", "compressed": "image_raw/compressed"}
TRANSPORTS = tuple(TRANSPORT_TOPICS)
# What CompressedImage.format may say (image_transport: "jpeg", or "bgr8; jpeg compressed bgr8").
COMPRESSED_FORMATS = ("jpeg", "jpg", "png")


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
    check_size(height, width, expected_hw)
    if step < row_bytes:
        raise ImageError(f"step {step} is smaller than a row of {width} {encoding} pixels ({row_bytes} bytes)")
    if len(message.data) < step * height:
        raise ImageError(f"data has {len(message.data)} bytes, {width}x{height} {encoding} with step {step} "
                         f"needs {step * height}")
    return channels, dtype, row_bytes


def check_size(height: int, width: int, expected_hw: tuple[int, int] | None) -> None:
    if expected_hw is not None and (height, width) != tuple(expected_hw):
        raise ImageError(f"image is {width}x{height}, this camera is calibrated for {expected_hw[1]}x{expected_hw[0]}")


def to_rgb(message, to_8bit: SixteenBitRule = HIGH_BYTE) -> np.ndarray:
    """H x W x 3 uint8 RGB for the model (a view when the message already is rgb8)."""
    pixels = view(message)  # validates the encoding first
    return _ENCODINGS[message.encoding.lower()][2](pixels, to_8bit)


def per_camera_transports(transports: list[str], cameras: list[str]) -> list[str]:
    """Each camera's transport from one for all or one per camera; ValueError otherwise."""
    transports = [t.strip() for t in transports]
    if len(transports) not in (1, len(cameras)) or any(t not in TRANSPORTS for t in transports):
        raise ValueError(f"transport must be {' or '.join(TRANSPORTS)}, once or once per camera "
                         f"({len(cameras)}); got {','.join(transports)}")
    return transports * len(cameras) if len(transports) == 1 else transports


def check_compressed(message) -> str | None:
    """Why a CompressedImage cannot be used, from its fields alone (the subscription callback
    does not decode), or None. Corrupt bytes are found by decode_compressed."""
    format_ = message.format.lower()
    if "compresseddepth" in format_.replace(" ", ""):
        return f"format '{message.format}' is a compressed depth image, not a camera image"
    if not any(name in format_ for name in COMPRESSED_FORMATS):
        return f"unsupported compressed format '{message.format}'; supported: jpeg, png"
    if len(message.data) == 0:
        return "compressed image with no data"
    return None


def decode_compressed(message, expected_hw: tuple[int, int] | None = None,
                      to_8bit: SixteenBitRule = HIGH_BYTE) -> np.ndarray:
    """H x W x 3 uint8 RGB of a JPEG / PNG CompressedImage; ImageError for corrupt data."""
    problem = check_compressed(message)
    if problem:
        raise ImageError(problem)
    data = np.frombuffer(message.data, dtype=np.uint8)
    pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ImageError(f"corrupt compressed frame: {len(data)} bytes that OpenCV cannot decode as "
                         f"'{message.format}'")
    check_size(pixels.shape[0], pixels.shape[1], expected_hw)
    pixels = to_8bit(pixels)
    if pixels.ndim == 2:
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGB if pixels.shape[2] == 4 else cv2.COLOR_BGR2RGB)


def fields_of(array: np.ndarray, encoding: str) -> dict:
    """Image message fields for a mono8 / mono16 / rgb8 array (little-endian)."""
    array = np.ascontiguousarray(array)
    expected = {"mono8": (2, np.uint8), "mono16": (2, np.uint16), "rgb8": (3, np.uint8)}
    if encoding not in expected or array.ndim != expected[encoding][0] or array.dtype != expected[encoding][1]:
        raise ImageError(f"cannot encode a {array.dtype} array of shape {array.shape} as {encoding}")
    return {"height": array.shape[0], "width": array.shape[1], "encoding": encoding, "is_bigendian": 0,
            "step": array.strides[0], "data": array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()}
