"""Data passed between the perception stages. Plain dataclasses and numpy arrays: no ROS."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from segmentation_node.contract import Source
from segmentation_node.masks import BoxedMask


@dataclass(frozen=True, eq=False)
class CameraFrame:
    """One camera image of a synchronized frame set."""

    camera: str
    stamp_ns: int
    image: np.ndarray  # H x W x 3 uint8, RGB
    frame_id: str = ""
    changed: np.ndarray | None = None  # H x W bool: differs from the empty cell (the intrusion monitor's)


@dataclass(frozen=True)
class Prompt:
    """A text prompt for the detector and the ontology class (and attributes) it stands for:
    "scratched metal disc" -> label "part_a", attributes ("scratched",). `forbidden`: the class
    is a forbidden region (hand, fixture, tool): a backend's track cap keeps those first."""

    text: str
    label: str
    attributes: tuple[str, ...] = ()
    forbidden: bool = False


@dataclass(eq=False)
class Detection:
    """One instance a backend found in one view."""

    mask: BoxedMask
    score: float      # [0, 1]
    label: str        # ontology class
    prompt: str = ""  # the prompt text that produced it ("" for non-prompted channels)
    track_id: int = 0  # backend-local track id in this view; 0 = not tracked
    source: Source = Source.MODEL
    attributes: tuple[str, ...] = field(default=())
    uncertain: tuple[str, ...] = field(default=())  # attributes the backend could not decide either way


class SegmentationBackend(Protocol):
    """Frame set of N views + active prompts -> per-view detections.

    `keyframe` asks for a full detection pass (every K frames, after an intent change, when
    tracks were lost); between keyframes a backend may propagate its tracks instead. A backend
    keeps per-view stream state and must keep it bounded."""

    name: str
    model_version: str

    def process(self, views: Sequence[CameraFrame], prompts: Sequence[Prompt],
                keyframe: bool) -> list[list[Detection]]: ...

    def reset(self) -> None:
        """Forget all stream state (new scene, new intent, after an error)."""
