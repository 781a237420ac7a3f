"""The intrusion monitor: a stage of every pipeline, whatever the backend (sam3, sam3_trt,
sam3_small, classical). Per commissioned camera it compares the view with the empty cell and
reports the changed regions that reach outside the pick zone or are far larger than a part as
forbidden "unknown object" regions. The pipeline adds them to the model's forbidden regions, so
a hand the model does not name is still forbidden, and no model output can remove them."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segmentation_node.contract import Source
from segmentation_node.perception.classical import INTRUSION_LABEL, BackgroundModel, intrusion_regions
from segmentation_node.perception.types import CameraFrame, Detection


@dataclass(frozen=True, eq=False)
class ZoneView:
    """One commissioned camera: its empty cell and its pick zone (H x W bool)."""

    background: BackgroundModel
    zone: np.ndarray


@dataclass(frozen=True, eq=False)
class IntrusionMonitor:
    views: dict[str, ZoneView]
    max_part_area: int  # pixels: a changed region three times larger is not a part

    def observe(self, view: CameraFrame) -> tuple[np.ndarray, list[Detection]]:
        """The view's changed pixels and its intrusions. KeyError for a camera that was not
        commissioned, ValueError for an image of another size: the pipeline fails safe on both."""
        setup = self.views.get(view.camera)
        if setup is None:
            raise KeyError(f"camera '{view.camera}' was not commissioned; known: {', '.join(self.views)}")
        changed = setup.background.foreground(view.image)
        return changed, [Detection(region, 1.0, INTRUSION_LABEL, source=Source.INTRUSION)
                         for region in intrusion_regions(changed, setup.zone, self.max_part_area)]
