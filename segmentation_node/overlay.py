"""Draw instance masks over an image for people (rqt_image_view, demo pictures). ROS-free."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from segmentation_node.contract import Role
from segmentation_node.masks import BoxedMask

ROLE_COLORS = {  # RGB
    Role.TARGET: (40, 220, 60),
    Role.FORBIDDEN: (235, 30, 30),
    Role.IGNORE: (150, 150, 150),
    Role.UNKNOWN: (240, 220, 0),
}


@dataclass(frozen=True)
class OverlayItem:
    mask: BoxedMask
    role: Role
    text: str


def draw_overlay(image_rgb: np.ndarray, items: list[OverlayItem], banner: str = "") -> np.ndarray:
    """A copy of the image with each mask tinted by role, outlined and labelled; forbidden regions
    drawn last so nothing hides them. An optional banner line goes on top."""
    canvas = image_rgb.astype(np.float32)
    ordered = sorted(items, key=lambda item: item.role == Role.FORBIDDEN)
    for item in ordered:
        color = np.array(ROLE_COLORS[item.role], dtype=np.float32)
        alpha = 0.45 if item.role == Role.FORBIDDEN else 0.3
        region = canvas[item.mask.box]
        region[item.mask.crop] = (1 - alpha) * region[item.mask.crop] + alpha * color
    out = np.clip(canvas, 0, 255).astype(np.uint8)
    scale = max(out.shape[1] / 960.0, 0.35)
    for item in (item for item in ordered if item.mask.area):
        # A ring of background around the crop, so a mask touching its box is outlined there too.
        ringed = cv2.copyMakeBorder(item.mask.crop.view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
        contours, _ = cv2.findContours(ringed, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
                                       offset=(item.mask.left - 1, item.mask.top - 1))
        cv2.drawContours(out, contours, -1, ROLE_COLORS[item.role], max(1, int(2 * scale)))
        if item.text and contours:
            x, y, _, _ = cv2.boundingRect(np.concatenate(contours))
            cv2.putText(out, item.text, (x, max(y - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale * 1.6,
                        ROLE_COLORS[item.role], max(1, int(scale * 1.5)), cv2.LINE_AA)
    if banner:
        height = int(26 * scale * 1.6)
        out[:height] = (out[:height] * 0.35).astype(np.uint8)
        cv2.putText(out, banner, (6, int(height * 0.72)), cv2.FONT_HERSHEY_SIMPLEX, 0.55 * scale * 1.6,
                    (255, 255, 255), max(1, int(scale * 1.5)), cv2.LINE_AA)
    return out
