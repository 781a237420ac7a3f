"""sensor_msgs/Image -> RGB array: cv_bridge where the distro has it (robots) for the 8-bit RGB
family, segmentation_node.image_codec's table for the rest and where cv_bridge is missing. Both
raise ImageError for an unusable image."""
from __future__ import annotations

import importlib.util
from typing import Callable

import numpy as np

from segmentation_node.image_codec import CV_BRIDGE_ENCODINGS, ImageError, to_rgb


def _cv_bridge_converter() -> Callable[[object], np.ndarray]:
    from cv_bridge import CvBridge, CvBridgeError

    bridge = CvBridge()

    def convert(message) -> np.ndarray:
        if message.encoding.lower() not in CV_BRIDGE_ENCODINGS:
            return to_rgb(message)  # Bayer, YUV, 16 bit: one table, the same result on every machine
        try:
            return bridge.imgmsg_to_cv2(message, desired_encoding="rgb8")
        except (CvBridgeError, TypeError, ValueError) as error:
            raise ImageError(f"cv_bridge cannot convert the image: {error}") from None

    return convert


def make_converter() -> Callable[[object], np.ndarray]:
    return _cv_bridge_converter() if importlib.util.find_spec("cv_bridge") else to_rgb
