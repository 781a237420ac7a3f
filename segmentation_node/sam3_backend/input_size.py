"""SAM3's square input size rule. Torch-free, so the node's parameters and workcell_sizing can
check a size before any model is loaded."""
from __future__ import annotations

PATCH_SIZE = 14
FULL_IMAGE_SIZE = 1008  # what SAM3 was trained at
MIN_IMAGE_SIZE = 8 * PATCH_SIZE


def check_image_size(image_size: int, name: str = "image size") -> int:
    if image_size % PATCH_SIZE or image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"{name} must be a multiple of {PATCH_SIZE} and >= {MIN_IMAGE_SIZE}, got {image_size}")
    return image_size
