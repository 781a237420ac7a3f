"""The intrusion monitor: a stage of every pipeline, whatever the backend (sam3, sam3_trt,
sam3_small, classical). Per commissioned camera it compares the view with the empty cell and
reports the changed regions that reach outside the pick zone or are far larger than a part as
forbidden "unknown object" regions. The pipeline adds them to the model's forbidden regions, so
a hand the model does not name is still forbidden, and no model output can remove them. A
region that reaches into the pick zone from outside it is named so (PICK_ZONE_INTRUSION_LABEL)
and stops the cell for approval (actionability.auto_pause_labels)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segmentation_node.contract import INTRUSION_LABEL, PICK_ZONE_INTRUSION_LABEL, Source
from segmentation_node.masks import BoxedMask
from segmentation_node.perception.classical import BackgroundModel, intrusion_regions
from segmentation_node.perception.types import CameraFrame, Detection


IN_ZONE_MIN_PIXELS = 20  # fewer pixels of a region on one side of the zone's edge are blur and shadow


@dataclass(frozen=True, eq=False)
class ZoneView:
    """One commissioned camera: its empty cell, its pick zone (H x W bool), and the largest
    area a part covers in it (pixels): a changed region three times larger is not a part."""

    background: BackgroundModel
    zone: np.ndarray
    max_part_area: int


@dataclass(frozen=True, eq=False)
class IntrusionMonitor:
    views: dict[str, ZoneView]

    def observe(self, view: CameraFrame) -> tuple[np.ndarray, list[Detection]]:
        """The view's changed pixels and its intrusions. KeyError for a camera that was not
        commissioned, ValueError for an image of another size: the pipeline fails safe on both."""
        setup = self.views.get(view.camera)
        if setup is None:
            raise KeyError(f"camera '{view.camera}' was not commissioned; known: {', '.join(self.views)}")
        changed = setup.background.foreground(view.image)
        return changed, [Detection(region, 1.0, PICK_ZONE_INTRUSION_LABEL if _enters(region, setup.zone)
                                   else INTRUSION_LABEL, source=Source.INTRUSION)
                         for region in intrusion_regions(changed, setup.zone, setup.max_part_area)]


def _enters(region: BoxedMask, zone: np.ndarray) -> bool:
    """Whether the region reaches into the zone from outside it (from the rest of the view or
    from beyond its border): a hand or tool on its way in. A large region wholly inside the
    zone (parts heaped together) and one wholly outside (a tool beside the bin) stay keep-out
    regions that do not stop the cell."""
    inside = np.count_nonzero(region.within(zone))
    at_border = region.top == 0 or region.left == 0 or region.box[0].stop == region.shape[0] \
        or region.box[1].stop == region.shape[1]
    return inside >= IN_ZONE_MIN_PIXELS and (region.area - inside >= IN_ZONE_MIN_PIXELS or at_border)
