"""Draw instance masks over an image for people (rqt_image_view, demo pictures). ROS-free."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from segmentation_node.contract import Role

ROLE_COLORS = {  # RGB
    Role.TARGET: (40, 220, 60),
    Role.FORBIDDEN: (235, 30, 30),
    Role.IGNORE: (150, 150, 150),
    Role.UNKNOWN: (240, 220, 0),
}


@dataclass(frozen=True)
class OverlayItem:
    mask: np.ndarray  # H x W bool
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
        canvas[item.mask] = (1 - alpha) * canvas[item.mask] + alpha * color
    out = np.clip(canvas, 0, 255).astype(np.uint8)
    scale = max(out.shape[1] / 960.0, 0.35)
    for item in ordered:
        contours, _ = cv2.findContours(item.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
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
