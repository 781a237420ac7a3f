"""Segmentation metrics against ground truth: mask IoU, COCO mask AP (pycocotools), boundary F,
forbidden-region pixel recall, temporal stability (id switches, flicker). Used by tests, the
evaluation CLI and the release gate."""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field

import cv2
import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segmentation_node.masks import BoxedMask, coco_mask_fields


def boundary_f_score(prediction: np.ndarray, truth: np.ndarray, tolerance: int = 2) -> float:
    """F-measure of boundary pixels matched within `tolerance` pixels (DAVIS-style)."""
    def boundary(mask):
        mask = mask.astype(np.uint8)
        return (mask - cv2.erode(mask, np.ones((3, 3), np.uint8))).astype(bool)

    predicted, true = boundary(prediction), boundary(truth)
    if not predicted.any() and not true.any():
        return 1.0
    if not predicted.any() or not true.any():
        return 0.0
    near_true = cv2.distanceTransform((~true).astype(np.uint8), cv2.DIST_L2, 3) <= tolerance
    near_predicted = cv2.distanceTransform((~predicted).astype(np.uint8), cv2.DIST_L2, 3) <= tolerance
    precision = np.count_nonzero(predicted & near_true) / np.count_nonzero(predicted)
    recall = np.count_nonzero(true & near_predicted) / np.count_nonzero(true)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def pixel_recall(predicted: np.ndarray, truth: np.ndarray) -> float | None:
    """Share of true pixels covered by the prediction; None when there is nothing to find."""
    total = np.count_nonzero(truth)
    return np.count_nonzero(predicted & truth) / total if total else None


@dataclass
class CocoMaskAP:
    """Accumulates images of ground truth and scored predictions; `evaluate` runs COCOeval."""

    categories: list[str]
    _images: list[dict] = field(default_factory=list)
    _truth: list[dict] = field(default_factory=list)
    _predictions: list[dict] = field(default_factory=list)

    def add_image(self, truth: list[tuple[str, BoxedMask]], predictions: list[tuple[str, BoxedMask, float]]) -> None:
        image_id = len(self._images) + 1
        height, width = (truth[0][1] if truth else predictions[0][1]).shape
        self._images.append({"id": image_id, "width": width, "height": height})
        for label, mask in truth:
            self._truth.append({"id": len(self._truth) + 1, "image_id": image_id,
                                "category_id": self.categories.index(label) + 1, **coco_mask_fields(mask),
                                "iscrowd": 0})
        for label, mask, score in predictions:
            self._predictions.append({"image_id": image_id, "category_id": self.categories.index(label) + 1,
                                      "segmentation": coco_mask_fields(mask)["segmentation"], "score": float(score)})

    def evaluate(self) -> dict[str, float]:
        """{"AP": mAP@[.5:.95], "AP50": mAP@.5} over the accumulated images."""
        if not self._truth or not self._predictions:
            return {"AP": 0.0, "AP50": 0.0}
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools narrates every step
            truth = COCO()
            truth.dataset = {"images": self._images, "annotations": self._truth,
                             "categories": [{"id": i + 1, "name": n} for i, n in enumerate(self.categories)]}
            truth.createIndex()
            evaluation = COCOeval(truth, truth.loadRes(self._predictions), iouType="segm")
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        return {"AP": float(evaluation.stats[0]), "AP50": float(evaluation.stats[1])}


@dataclass
class TemporalStability:
    """Per true object (and view): the predicted id it was matched to over time.

    An id switch is a change of the matched predicted id; flicker is a frame where an object
    that was matched before and is matched again later was missed in between."""

    _history: dict[tuple, list[int | None]] = field(default_factory=dict)

    def observe(self, key: tuple, predicted_id: int | None) -> None:
        self._history.setdefault(key, []).append(predicted_id)

    @property
    def id_switches(self) -> int:
        switches = 0
        for sequence in self._history.values():
            seen = [i for i in sequence if i is not None]
            switches += sum(1 for a, b in zip(seen, seen[1:]) if a != b)
        return switches

    @property
    def flicker(self) -> int:
        gaps = 0
        for sequence in self._history.values():
            matched = [i is not None for i in sequence]
            if True in matched:
                first, last = matched.index(True), len(matched) - 1 - matched[::-1].index(True)
                gaps += matched[first:last + 1].count(False)
        return gaps
