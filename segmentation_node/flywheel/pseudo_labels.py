"""Which model outputs may become training labels without a human: confident, temporally stable,
and consistent across views. Everything else is a candidate hard case, never a label.

A view is kept only when *every* model instance in it passes: a view with one unlabelled part
would teach the model that the part is background (pseudo-label poisoning by omission). For the
same reason a view is dropped when an intrusion region (the model-independent change detector)
is mostly not explained by the model's instances: something is there that the model did not name.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from segmentation_node.contract import Source
from segmentation_node.perception.actionability import Instance


@dataclass(frozen=True)
class PseudoLabelPolicy:
    min_score: float = 0.8       # the model's own score
    stable_frames: int = 3       # consecutive frame sets the track has kept its label
    min_stability: float = 0.7   # the tracker's smoothed mask IoU between frames
    min_views: int = 1           # views that must see the object (capped at the view count); every view
                                 # that sees an object (one global id) must give it the same label
    every_n: int = 10            # at most one frame set in n: consecutive frames are near duplicates
    max_unexplained: float = 0.2  # share of an intrusion region no model instance covers

    def __post_init__(self):
        if not 0.0 <= self.min_score <= 1.0 or not 0.0 <= self.min_stability <= 1.0:
            raise ValueError("min_score and min_stability must be in [0, 1]")
        if self.stable_frames < 1 or self.min_views < 1 or self.every_n < 1:
            raise ValueError("stable_frames, min_views and every_n must be >= 1")


class PseudoLabelFilter:
    def __init__(self, policy: PseudoLabelPolicy = PseudoLabelPolicy()):
        self.policy = policy
        self._streaks: dict[tuple[str, int], tuple[str, int]] = {}  # (camera, id) -> (label, frames)
        self._since_logged = policy.every_n  # the first qualifying frame set may be logged

    def select(self, views: dict[str, list[Instance]]) -> dict[str, list[Instance]]:
        """Views whose every instance qualifies (at most once every `every_n` calls); may be empty."""
        self._update_streaks(views)
        self._since_logged += 1
        if self._since_logged < self.policy.every_n:
            return {}
        labels_by_object = defaultdict(set)
        views_by_object = defaultdict(int)
        for instances in views.values():
            for instance in instances:
                if instance.track_id:
                    labels_by_object[instance.track_id].add(instance.label)
                    views_by_object[instance.track_id] += 1
        needed_views = min(self.policy.min_views, len(views))
        kept = {}
        for camera, instances in views.items():
            named = [i for i in instances if i.source is Source.MODEL]
            if named and self._explained(instances) and all(
                    self._qualifies(camera, instance, labels_by_object, views_by_object, needed_views)
                    for instance in named):
                kept[camera] = named
        if kept:
            self._since_logged = 0
        return kept

    def _update_streaks(self, views: dict[str, list[Instance]]) -> None:
        streaks = {}
        for camera, instances in views.items():
            for instance in instances:
                if not instance.track_id:
                    continue
                label, frames = self._streaks.get((camera, instance.track_id), (instance.label, 0))
                streaks[(camera, instance.track_id)] = (instance.label, frames + 1 if label == instance.label else 1)
        self._streaks = streaks  # tracks not seen this frame set lose their streak

    def _explained(self, instances: list[Instance]) -> bool:
        intrusions = [i.mask for i in instances if i.source is Source.INTRUSION]
        if not intrusions:
            return True
        named = np.zeros(intrusions[0].shape, bool)
        for instance in instances:
            if instance.source is Source.MODEL:
                instance.mask.paint(named, True)
        return all(mask.area - np.count_nonzero(mask.within(named)) <= self.policy.max_unexplained * mask.area
                   for mask in intrusions)

    def _qualifies(self, camera: str, instance: Instance, labels_by_object, views_by_object, needed_views: int) -> bool:
        policy = self.policy
        return (instance.track_id != 0
                and instance.score >= policy.min_score and instance.stability >= policy.min_stability
                and self._streaks[(camera, instance.track_id)][1] >= policy.stable_frames
                and len(labels_by_object[instance.track_id]) == 1
                and views_by_object[instance.track_id] >= needed_views)
