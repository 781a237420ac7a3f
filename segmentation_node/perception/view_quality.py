"""Can this camera see the cell? A cheap per-image verdict that turns a black, white, washed-out,
covered or moved camera into CAMERA_BLIND instead of a view whose empty results look fine.

Measured on an area-downsampled luma image about 160 pixels wide, so the cost hardly grows
with the camera resolution (~0.23 ms at 640x480, ~0.36 ms at 1280x720, one core):
- clipped: most pixels black or white (lens cap, lights off, heavy over-exposure);
- contrast: the luma spread over the frame (uniform or near-constant image);
- edges kept: given the commissioned empty cell, the share of its edges (bin rims, fixtures)
  still in place with the same direction and strength, after one global gain (dimmed lights).
  A per-pixel difference cannot see a moved camera: the plain table seen elsewhere still
  matches the plain table, so only 20-40 % of the pixels change, but almost no edge stays in
  place. Parts or a hand only hide the edges under them.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class ViewQualityConfig:
    # 1/8 of 1280x720, 1/4 of 640x480: bin rims are still a pixel or two wide, and sensor noise
    # is averaged over 8-32 pixels per cell.
    working_width: int = 160
    # Luma at or below / at or above which a pixel is clipped: it shows nothing.
    dark_level: int = 10
    bright_level: int = 245
    # "Most pixels". Normal views clip at most 3 % (white parts); 2x over-exposure clips
    # 66-80 %, 3x 83-94 %, a black or white image 100 %.
    max_clipped_fraction: float = 0.5
    # Luma spread, 5th to 95th percentile, 8-bit levels. Normal views 49-171, 32 with the lights
    # at 0.5x; uniform grey with sensor noise 1-3, lights off (0.08-0.1x exposure) 5-13.
    min_contrast: float = 16.0
    # Background slope (levels per working pixel) that makes an edge: table grain is ~2,
    # bin rims and fixtures 25-60.
    edge_gradient: float = 6.0
    # A frame slope within this fraction of the background's (after the gain) is the same edge.
    edge_tolerance: float = 0.5
    # Share of the background's edges that must be in place. Normal views keep 0.72-0.99, a
    # hand filling 40 % of the frame from a side 0.35-0.68, a 2-pixel jitter at 640x480 >= 0.49;
    # a camera shifted by 10-25 % of the frame keeps <= 0.14, by 5 % <= 0.22, turned 20 degrees
    # <= 0.07, another camera's view <= 0.05. Fails safe: an object right over the bin that hides
    # more than 3/4 of its edges is reported too (it hides the cell as well).
    min_edges_kept: float = 0.25
    # With fewer edge pixels than this a background cannot tell a moved camera (the synthetic
    # cell has 9-11 %).
    min_background_edges: float = 0.01


@dataclass(frozen=True)
class ViewMeasures:
    """What check() decides on; edges_kept is None without a background."""

    dark_fraction: float
    bright_fraction: float
    contrast: float
    edges_kept: float | None


class ViewQualityCheck:
    def __init__(self, background: np.ndarray | None = None, config: ViewQualityConfig = ViewQualityConfig()):
        """background: the commissioned empty cell, H x W x 3 RGB (BackgroundModel.median)."""
        self.config = config
        self._shape = None
        if background is None:
            return
        if background.ndim != 3 or background.shape[2] != 3:
            raise ValueError(f"background must be H x W x 3 RGB, got shape {background.shape}")
        self._shape = background.shape
        grey = self._reduce(background.astype(np.float32))
        self._background = grey + 1.0  # the gain is a ratio: no division by a black pixel
        gx, gy = _gradients(grey)
        magnitude = np.hypot(gx, gy)
        self._edges = np.flatnonzero(magnitude > config.edge_gradient)
        if self._edges.size < config.min_background_edges * magnitude.size:
            raise ValueError(f"the background has edges at {self._edges.size / magnitude.size:.1%} of its pixels "
                             f"(needs {config.min_background_edges:.0%}): too featureless to tell a moved camera")
        self._edge_slopes = gx.ravel()[self._edges], gy.ravel()[self._edges]
        self._edge_magnitude = magnitude.ravel()[self._edges]

    def check(self, rgb: np.ndarray) -> str | None:
        """Why this H x W x 3 uint8 RGB image cannot see the cell, or None when it can."""
        m = self.measure(rgb)
        c = self.config
        if m.dark_fraction > c.max_clipped_fraction:
            return f"image is black: {m.dark_fraction:.0%} of pixels at or below {c.dark_level}"
        if m.bright_fraction > c.max_clipped_fraction:
            return f"image is saturated: {m.bright_fraction:.0%} of pixels at or above {c.bright_level}"
        if m.contrast < c.min_contrast:
            return f"image is near-constant: contrast {m.contrast:.0f} levels (needs {c.min_contrast:.0f})"
        if m.edges_kept is not None and m.edges_kept < c.min_edges_kept:
            return (f"view does not match the commissioned empty cell: {m.edges_kept:.0%} of its edges in place "
                    f"(needs {c.min_edges_kept:.0%}); camera moved or lens covered?")
        return None

    def measure(self, rgb: np.ndarray) -> ViewMeasures:
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {rgb.dtype} of shape {rgb.shape}")
        if self._shape is not None and rgb.shape != self._shape:
            raise ValueError(f"image {rgb.shape} does not match the background {self._shape}")
        grey = self._reduce(rgb)
        c = self.config
        cumulative = np.cumsum(np.bincount(grey.ravel(), minlength=256)) / grey.size
        p5, p95 = np.searchsorted(cumulative, (0.05, 0.95))
        dark, bright = float(cumulative[c.dark_level]), float(1.0 - cumulative[c.bright_level - 1])
        contrast = float(p95 - p5)
        if self._shape is None:
            return ViewMeasures(dark, bright, contrast, None)
        frame = grey.astype(np.float32)
        gain = float(np.median(frame / self._background))  # the median ignores what parts or a hand cover
        fx, fy = _gradients(frame)
        bx, by = self._edge_slopes
        error = np.hypot(fx.ravel()[self._edges] - gain * bx, fy.ravel()[self._edges] - gain * by)
        kept = float(np.mean(error < c.edge_tolerance * gain * self._edge_magnitude))
        return ViewMeasures(dark, bright, contrast, kept)

    def _reduce(self, rgb: np.ndarray) -> np.ndarray:
        """Area-downsampled luma about working_width wide (uint8 for a uint8 image)."""
        height, width = rgb.shape[:2]
        factor = max(1, round(width / self.config.working_width))
        if factor > 1:
            # From 4x on every other row is enough (a cell still averages factor^2 / 2 pixels)
            # and halves the memory read, which is most of the cost.
            rows = rgb[::2] if factor >= 4 else rgb
            rgb = cv2.resize(rows, (width // factor, height // factor), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def _gradients(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Luma slopes in levels per working pixel (Sobel / 8)."""
    return (cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3, scale=0.125),
            cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3, scale=0.125))
