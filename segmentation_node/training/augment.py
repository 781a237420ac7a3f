"""Factory-floor augmentation: what changes between a commissioning recording and a shift on
the line. Lighting gain and colour cast, specular highlights on metal, motion and defocus blur,
sensor noise, and things that get in the way (occluders). Geometric changes (flip, shift) move
the masks with the image; occluders remove the pixels they hide from the masks (masks are of
visible pixels). Everything draws from the caller's generator: same seed, same result.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    flip_probability: float = 0.5
    max_shift: float = 0.1                          # of the image width / height
    gain_range: tuple[float, float] = (0.6, 1.4)    # global exposure / lighting level
    colour_cast: float = 0.12                       # per-channel gain deviation
    highlight_probability: float = 0.4
    max_highlights: int = 3
    blur_probability: float = 0.3                   # motion or defocus, half each
    max_blur: float = 0.03                          # kernel size, of the shorter image side
    max_noise_sigma: float = 8.0                    # in 8-bit levels
    occluder_probability: float = 0.3
    max_occluder_size: float = 0.3                  # side, of the image side

    @classmethod
    def none(cls) -> AugmentConfig:
        """No change at all: for held-out evaluation."""
        return cls(flip_probability=0.0, max_shift=0.0, gain_range=(1.0, 1.0), colour_cast=0.0,
                   highlight_probability=0.0, blur_probability=0.0, max_noise_sigma=0.0,
                   occluder_probability=0.0)


@dataclass(frozen=True)
class Geometry:
    """A flip and an integer shift; one per clip so objects keep moving as they did."""

    flip: bool
    dx: int
    dy: int

    def image(self, image: np.ndarray) -> np.ndarray:
        """H x W x C."""
        return _shift(image[:, ::-1] if self.flip else image, self.dx, self.dy)

    def masks(self, masks: np.ndarray) -> np.ndarray:
        """N x H x W."""
        moved = self.image(np.moveaxis(masks, 0, -1))
        return np.ascontiguousarray(np.moveaxis(moved, -1, 0))


def sample_geometry(rng: np.random.Generator, width: int, height: int, config: AugmentConfig
                    ) -> Geometry:
    flip = bool(rng.random() < config.flip_probability)
    dx, dy = (int(round(rng.uniform(-1, 1) * config.max_shift * side)) for side in (width, height))
    return Geometry(flip, dx, dy)


def augment(image: np.ndarray, masks: np.ndarray, rng: np.random.Generator, config: AugmentConfig,
            geometry: Geometry | None = None) -> tuple[np.ndarray, np.ndarray]:
    """H x W x 3 uint8 RGB and N x H x W bool -> augmented copies. Pass `geometry` to apply
    the same flip and shift to every frame of a clip."""
    height, width = image.shape[:2]
    geometry = geometry or sample_geometry(rng, width, height, config)
    pixels = geometry.image(image).astype(np.float32)
    masks = geometry.masks(masks)
    pixels = _lighting(pixels, rng, config)
    if rng.random() < config.highlight_probability:
        pixels = _highlights(pixels, rng, config)
    if rng.random() < config.blur_probability:
        pixels = _blur(pixels, rng, config)
    if config.max_noise_sigma > 0:
        pixels += rng.normal(0.0, rng.uniform(0, config.max_noise_sigma), pixels.shape).astype(np.float32)
    if rng.random() < config.occluder_probability:
        pixels, masks = _occlude(pixels, masks, rng, config)
    return np.clip(pixels, 0, 255).round().astype(np.uint8), masks


def _shift(array: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Translate the first two (row, column) axes; uncovered pixels are 0, nothing wraps."""
    out = np.zeros_like(array)
    height, width = array.shape[:2]
    if abs(dx) >= width or abs(dy) >= height:
        return out
    out[max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
        array[max(-dy, 0):height + min(-dy, 0), max(-dx, 0):width + min(-dx, 0)]
    return out


def _lighting(pixels: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    gain = rng.uniform(*config.gain_range)
    cast = 1.0 + rng.uniform(-config.colour_cast, config.colour_cast, size=3)
    return pixels * np.float32(gain) * cast.astype(np.float32)


def _highlights(pixels: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Specular glints: saturating white Gaussian blobs, as polished steel throws them."""
    height, width = pixels.shape[:2]
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    for _ in range(int(rng.integers(1, config.max_highlights + 1))):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        sigma = rng.uniform(0.01, 0.06) * min(width, height) + 1.0
        blob = np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * sigma ** 2))
        pixels = pixels + (rng.uniform(120, 255) * blob)[..., None]
    return pixels


def _blur(pixels: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    size = max(3, int(rng.uniform(0.3, 1.0) * config.max_blur * min(pixels.shape[:2])) | 1)
    kernel = np.zeros((size, size), np.float32)
    if rng.random() < 0.5:  # motion: a line through the centre at a random angle
        angle = rng.uniform(0, np.pi)
        centre = size // 2
        end = np.array([np.cos(angle), np.sin(angle)]) * centre
        cv2.line(kernel, tuple(int(round(v)) for v in centre - end),
                 tuple(int(round(v)) for v in centre + end), 1.0, thickness=1)
    else:  # defocus: a disc
        cv2.circle(kernel, (size // 2, size // 2), size // 2, 1.0, thickness=-1)
    return cv2.filter2D(pixels, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT)


def _occlude(pixels: np.ndarray, masks: np.ndarray, rng: np.random.Generator, config: AugmentConfig
             ) -> tuple[np.ndarray, np.ndarray]:
    """A flat-coloured rectangle in front of everything: what it hides leaves the masks."""
    height, width = pixels.shape[:2]
    box_w = max(1, int(rng.uniform(0.05, config.max_occluder_size) * width))
    box_h = max(1, int(rng.uniform(0.05, config.max_occluder_size) * height))
    x0, y0 = int(rng.integers(0, width - box_w + 1)), int(rng.integers(0, height - box_h + 1))
    pixels = pixels.copy()
    pixels[y0:y0 + box_h, x0:x0 + box_w] = rng.uniform(0, 255, size=3).astype(np.float32)
    masks = masks.copy()
    masks[:, y0:y0 + box_h, x0:x0 + box_w] = False
    return pixels, masks
