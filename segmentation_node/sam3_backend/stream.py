"""Per-view stream state: SAM3 tracker propagation between detector keyframes, bounded.

sam3's video pipeline keeps every frame's output, holds results back for `hotstart_delay`
frames and owns the keyframe schedule. Here the caller owns the schedule, and the tracker
(`Sam3TrackerBase.track_step`) runs on our own small memory bank:

- keyframe: detections are matched to the existing tracks by mask IoU (same prompt), so track
  ids persist; the memory bank restarts with one conditioning frame holding the matched and
  new objects' masks (the tracker re-conditions on detections, as sam3 does every N frames);
- between keyframes: every track is propagated from that memory in one batched `track_step`;
  at most `max_memory_frames` non-conditioning frames are kept, and at most `max_objects`
  tracks exist: forbidden regions first, then targets, highest score first within each.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from segmentation_node.masks import BoxedMask, greedy_match
from segmentation_node.sam3_backend.builder import Sam3Model


@dataclass(eq=False)
class TrackedObject:
    track_id: int
    prompt: str
    detection_score: float  # detector score at the last keyframe
    score: float            # detection_score x the tracker's presence probability now
    mask: BoxedMask         # latest while visible, else the last visible one
    visible: bool           # the tracker sees it in the current frame


@dataclass(eq=False)
class KeyframeDetection:
    prompt: str
    score: float
    mask: BoxedMask
    forbidden: bool = False  # a forbidden region: tracked before any target


class TrackerStream:
    """Tracks of one camera view. Feed it the detector backbone's output for that view."""

    def __init__(self, model: Sam3Model, max_objects: int = 16, max_memory_frames: int = 6,
                 match_iou: float = 0.3):
        if max_objects < 1 or max_memory_frames < 1:
            raise ValueError("max_objects and max_memory_frames must be >= 1")
        self.model = model
        self.max_objects = max_objects
        # The tracker attends to at most num_maskmem - 1 past frames: more would be dead weight.
        self.max_memory_frames = min(max_memory_frames, model.tracker.num_maskmem - 1)
        self.match_iou = match_iou
        self.tracks: list[TrackedObject] = []
        self._memory = self._empty_memory()
        self._frame_index = 0  # frames since the conditioning keyframe
        self._next_track_id = 1

    @property
    def memory_frames(self) -> int:
        return sum(len(frames) for frames in self._memory.values())

    def reset(self) -> None:
        self.tracks = []
        self._memory = self._empty_memory()
        self._frame_index = 0
        self._next_track_id = 1

    def keyframe(self, backbone_out: dict, view: int, detections: Sequence[KeyframeDetection]
                 ) -> list[TrackedObject]:
        """New detector output for this view: associate, then re-condition the tracker. At most
        `max_objects` tracks, forbidden regions first (a dropped hand would leave a pick beside it
        actionable), highest scores first within each: a target is kept only when every
        forbidden region is."""
        by_score = sorted(detections, key=lambda d: -d.score)
        chosen = ([d for d in by_score if d.forbidden] + [d for d in by_score if not d.forbidden])[: self.max_objects]
        chosen.sort(key=lambda d: -d.score)  # new track ids in score order, as before the cap
        self.tracks = self._associate(chosen)
        self._memory = self._empty_memory()
        self._frame_index = 0
        if self.tracks:
            masks = torch.from_numpy(np.stack([t.mask.to_array() for t in self.tracks])).to(self.model.device)
            size = self.model.tracker.input_mask_size
            # Same resize as Sam3TrackerPredictor.add_new_mask.
            mask_inputs = F.interpolate(masks[:, None].float(), size=(size, size),
                                        mode="bilinear", align_corners=False, antialias=True)
            self._step(backbone_out, view, mask_inputs)
        return self.tracks

    def propagate(self, backbone_out: dict, view: int) -> list[TrackedObject]:
        """Track every object into this frame from memory (no detector)."""
        if not self.tracks:
            return []
        self._frame_index += 1
        out = self._step(backbone_out, view, mask_inputs=None)
        height, width = self.tracks[0].mask.shape
        logits = out["pred_masks"].float()[:, 0].cpu().numpy()  # low resolution: upsampled once, in its box
        presence = out["object_score_logits"].float().sigmoid()[:, 0]
        for track, low_res, present in zip(self.tracks, logits, presence.tolist()):
            track.visible = present > 0.5
            if track.visible:  # an occluded track keeps its last mask for keyframe matching
                track.mask = BoxedMask.from_logits(low_res, height, width)
            track.score = track.detection_score * present
        return self.tracks

    def _step(self, backbone_out: dict, view: int, mask_inputs: torch.Tensor | None) -> dict:
        tracker = self.model.tracker
        image, feats, pos, sizes = self._tracker_features(backbone_out, view, len(self.tracks))
        conditioning = mask_inputs is not None
        out = tracker.track_step(
            frame_idx=self._frame_index, is_init_cond_frame=conditioning,
            current_vision_feats=feats, current_vision_pos_embeds=pos, feat_sizes=sizes,
            image=image, point_inputs=None, mask_inputs=mask_inputs, output_dict=self._memory,
            num_frames=self._frame_index + 1, run_mem_encoder=True)
        kind = "cond_frame_outputs" if conditioning else "non_cond_frame_outputs"
        # Only what later frames read back (see Sam3TrackerBase._prepare_memory_conditioned_features);
        # eff_iou_score exists where the tracker selects memory frames by it (the full model):
        # without it only the previous frame would be attended.
        self._memory[kind][self._frame_index] = {
            key: out[key] for key in ("maskmem_features", "maskmem_pos_enc", "pred_masks",
                                      "obj_ptr", "object_score_logits", "eff_iou_score")
            if key in out}
        past = self._memory["non_cond_frame_outputs"]
        while len(past) > self.max_memory_frames:
            del past[min(past)]
        return out

    def _tracker_features(self, backbone_out: dict, view: int, objects: int):
        """The view's second-neck features, projected as in Sam3VideoBase, one copy per object."""
        decoder = self.model.tracker.sam_mask_decoder
        neck = backbone_out["sam2_backbone_out"]
        fpn = [level[view:view + 1] for level in neck["backbone_fpn"]]
        fpn = [decoder.conv_s0(fpn[0]), decoder.conv_s1(fpn[1]), *fpn[2:]]
        positions = [level[view:view + 1] for level in neck["vision_pos_enc"]]
        _, feats, pos, sizes = self.model.tracker._prepare_backbone_features({
            "backbone_fpn": [level.expand(objects, -1, -1, -1) for level in fpn],
            "vision_pos_enc": [level.expand(objects, -1, -1, -1) for level in positions]})
        return None, feats, pos, sizes  # the image itself is unused by SimpleMaskEncoder

    def _associate(self, detections: Sequence[KeyframeDetection]) -> list[TrackedObject]:
        """Greedy mask-IoU matching to the previous tracks of the same prompt; the rest get new
        ids. Tracks the detector no longer reports end here."""
        matched = {di: self.tracks[ti].track_id for di, ti, _ in greedy_match(
            [d.mask for d in detections], [t.mask for t in self.tracks], self.match_iou,
            lambda di, ti: detections[di].prompt == self.tracks[ti].prompt)}
        tracks = []
        for di, detection in enumerate(detections):
            track_id = matched.get(di)
            if track_id is None:
                track_id, self._next_track_id = self._next_track_id, self._next_track_id + 1
            score = float(detection.score)
            tracks.append(TrackedObject(track_id, detection.prompt, score, score,
                                        detection.mask, visible=True))
        return tracks

    @staticmethod
    def _empty_memory() -> dict:
        return {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}

