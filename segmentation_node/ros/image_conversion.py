"""Camera messages -> RGB arrays, per transport. Raw `sensor_msgs/Image`: cv_bridge where the
distro has it (robots) for the 8-bit RGB family, segmentation_node.image_codec's table for the
rest and where cv_bridge is missing. `compressed` (`sensor_msgs/CompressedImage`, JPEG / PNG):
OpenCV's decoder, which is what cv_bridge's compressed conversion calls too. Every path raises
ImageError for an unusable image."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable

import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from segmentation_node.image_codec import (CV_BRIDGE_ENCODINGS, HIGH_BYTE, TRANSPORT_TOPICS, TRANSPORTS, ImageError,
                                           SixteenBitRule, check_compressed, check_format, decode_compressed,
                                           to_rgb)

Size = tuple[int, int] | None  # (rows, columns) the camera is calibrated for; None: not known


def _cv_bridge_converter(to_8bit: SixteenBitRule) -> Callable[[object], np.ndarray]:
    from cv_bridge import CvBridge, CvBridgeError

    bridge = CvBridge()

    def convert(message) -> np.ndarray:
        if message.encoding.lower() not in CV_BRIDGE_ENCODINGS:
            return to_rgb(message, to_8bit)  # Bayer, YUV, 16 bit: one table, the same result on every machine
        try:
            return bridge.imgmsg_to_cv2(message, desired_encoding="rgb8")
        except (CvBridgeError, TypeError, ValueError) as error:
            raise ImageError(f"cv_bridge cannot convert the image: {error}") from None

    return convert


def make_converter(to_8bit: SixteenBitRule = HIGH_BYTE) -> Callable[[object], np.ndarray]:
    if importlib.util.find_spec("cv_bridge"):
        return _cv_bridge_converter(to_8bit)
    return lambda message: to_rgb(message, to_8bit)


@dataclass(frozen=True)
class CameraInput:
    """One camera's transport: the topic under `<camera>/`, its type, the check the subscription
    callback makes (message fields only: cheap at any resolution) and the conversion the worker
    makes (with the size check a compressed image can only have once decoded)."""

    topic: str
    message_type: type
    stage: str  # in the node's stage timings
    check: Callable[[object, Size], str | None]
    to_rgb: Callable[[object, Size], np.ndarray]


def camera_input(transport: str, to_8bit: SixteenBitRule = HIGH_BYTE) -> CameraInput:
    if transport == "compressed":
        return CameraInput(TRANSPORT_TOPICS[transport], CompressedImage, "decode (compressed)",
                           lambda message, size: check_compressed(message),
                           lambda message, size: decode_compressed(message, size, to_8bit))
    if transport == "raw":
        convert = make_converter(to_8bit)
        return CameraInput(TRANSPORT_TOPICS[transport], Image, "conversion", check_format, lambda message, size: convert(message))
    raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}; got '{transport}'")
