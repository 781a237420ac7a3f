"""Stage 2, temporal: the memory tracker on consecutive frames of the same tracks, the
perception encoder (the detector's backbone, whose second neck feeds the tracker) frozen.

sam3 0.1.4 ships no tracker training (`Sam3TrackerBase.forward` raises), so this is our own
loop, run the way the cell runs the tracker (see stream.TrackerStream): the first frame of a
clip conditions the memory (GT masks as the detector's keyframe masks, or SAM box / click
prompts), every later frame is propagated from memory through `track_step`, and the memory
keeps its gradient so the loss on frame t also trains how frames < t were encoded. Loss per
frame: sam3's focal + dice on the masks of the objects that are present, and a presence
(object score) term on all of them, so occlusions and picks are learned too.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segmentation_node.sam3_backend.builder import Sam3Model
from segmentation_node.sam3_backend.device import cpu_redirect
from segmentation_node.sam3_backend.predictor import preprocess_image
from segmentation_node.training.augment import AugmentConfig, augment, sample_geometry
from segmentation_node.training.data import DataError, Frame, TrackClip, evenly_spaced, model_masks, track_clips
from segmentation_node.training.distributed import Workers, sample_rng
from segmentation_node.training.prompts import PromptMix, TrackerPrompt, tracker_prompt

GRAD_CLIP_NORM = 0.1
# As SAM 2's video recipe: mask focal dominates, dice and object presence at unit weight.
FOCAL_WEIGHT, DICE_WEIGHT, PRESENCE_WEIGHT = 20.0, 1.0, 1.0


def clip_masks(clip: TrackClip, track_ids: Sequence[int]) -> np.ndarray:
    """T x K x H x W bool: each track's mask per frame, empty where it is not visible."""
    per_frame = []
    for frame in clip.frames:
        masks = frame.masks()
        index = {instance.track_id: i for i, instance in enumerate(frame.instances)}
        empty = np.zeros((frame.height, frame.width), bool)
        per_frame.append(np.stack([masks[index[t]] if t in index else empty for t in track_ids]))
    return np.stack(per_frame)


def mask_and_presence_loss(mask_logits: torch.Tensor, object_logits: torch.Tensor,
                           targets: torch.Tensor) -> torch.Tensor:
    """K x 1 x S x S mask logits, K x 1 object-score logits, K x S x S float targets."""
    from sam3.train.loss.loss_fns import dice_loss, sigmoid_focal_loss

    present = targets.flatten(1).any(dim=1)
    # alpha < 0 and gamma 0: plain binary cross-entropy on "is the object visible".
    loss = PRESENCE_WEIGHT * sigmoid_focal_loss(object_logits.float(), present.float()[:, None],
                                                len(present), alpha=-1, gamma=0, triton=False)
    if present.any():
        logits = mask_logits[present, 0].float().flatten(1)
        target = targets[present].flatten(1)
        count = int(present.sum())
        loss = loss + FOCAL_WEIGHT * sigmoid_focal_loss(logits, target, count, triton=False) \
            + DICE_WEIGHT * dice_loss(logits, target, count)
    return loss


class TrackerTrainer:
    name = "stage 2 (tracker)"

    def __init__(self, model: Sam3Model, train_frames: Sequence[Frame],
                 held_out_frames: Sequence[Frame], *, clip_length: int = 4, max_objects: int = 8,
                 clips_per_step: int = 1, lr: float = 1e-4, weight_decay: float = 0.05,
                 held_out_limit: int = 16, augment_config: AugmentConfig = AugmentConfig(),
                 prompt_mix: PromptMix = PromptMix(), seed: int = 0, bf16: bool = False,
                 workers: Workers = Workers()):
        """`clips_per_step`: clips per step over all ranks (each computes its share)."""
        workers.share(clips_per_step)  # refuses a batch the ranks cannot split
        self.model = model
        self.train_clips = track_clips(train_frames, clip_length)
        # Non-overlapping windows: held-out loss should not count a frame twice.
        self.held_out_clips = evenly_spaced(
            track_clips(held_out_frames, clip_length, stride=clip_length), held_out_limit)
        if not self.train_clips or not self.held_out_clips:
            raise DataError(f"stage 2 needs runs of {clip_length} consecutive frames of one camera "
                            f"on both sides of the split; found {len(self.train_clips)} training "
                            f"and {len(self.held_out_clips)} held-out clips")
        self.max_objects = max_objects
        self.clips_per_step = clips_per_step
        self.augment_config = augment_config
        self.prompt_mix = prompt_mix
        self.bf16 = bf16
        self.seed, self.workers, self.steps_done = seed, workers, 0
        self._step: nn.Module | None = None  # the training forward, DDP-wrapped when distributed
        self.optimizer = torch.optim.AdamW(model.tracker.parameters(), lr=lr,
                                           weight_decay=weight_decay)
        self._held_out_inputs: list | None = None

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return list(self.model.tracker.named_parameters())

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        detector, tracker = self.model.detector, self.model.tracker
        saved_flags = {name: p.requires_grad for name, p in detector.named_parameters()}
        detector.eval()
        detector.requires_grad_(False)
        # The tracker only: the frozen perception encoder is outside DDP (no gradients to share).
        self._step = self.workers.wrap(_TrackerStep(tracker, self._clip_loss))
        try:
            yield
        finally:
            self._step = None
            for name, parameter in detector.named_parameters():
                parameter.requires_grad_(saved_flags[name])
            tracker.eval()

    def train_step(self) -> float:
        tracker = self.model.tracker
        tracker.train()
        # Sam3TrackerBase's own training branches read attributes the wheel never sets
        # (teacher_force_obj_scores_for_mem, prob_to_dropout_spatial_mem, rng): run the tracker's
        # inference control flow, as the cell does, while its submodules train (dropout on).
        tracker.training = False
        clips = []
        for sample in self.workers.share(self.clips_per_step):
            rng = sample_rng(self.seed, 2, self.steps_done, sample)
            clips.append((*self._draw_clip(rng), int(rng.integers(2**62))))  # + the clip's dropout seed
        loss = self._step(clips)  # the mean over this rank's clips
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # DDP averages the gradients over the ranks: the mean over all clips
        nn.utils.clip_grad_norm_(self.model.tracker.parameters(), GRAD_CLIP_NORM)
        self.optimizer.step()
        self.steps_done += 1
        return self.workers.sum([float(loss.detach())])[0] / self.workers.world

    def _draw_clip(self, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray, TrackerPrompt]:
        """A random clip and tracks, augmented with one geometry for all frames (objects keep
        moving as they did), the tracks still visible in frame 0, and a conditioning prompt."""
        while True:
            clip = self.train_clips[int(rng.integers(len(self.train_clips)))]
            track_ids = [int(t) for t in rng.permutation(clip.track_ids)[:self.max_objects]]
            masks = clip_masks(clip, track_ids)
            height, width = masks.shape[-2:]
            geometry = sample_geometry(rng, width, height, self.augment_config)
            images, augmented = [], []
            for frame, frame_masks in zip(clip.frames, masks):
                image, frame_masks = augment(frame.image(), frame_masks, rng,
                                             self.augment_config, geometry)
                images.append(image)
                augmented.append(frame_masks)
            masks = np.stack(augmented)
            visible = masks[0].reshape(len(track_ids), -1).any(axis=1)
            if visible.any():  # else augmentation hid every object of frame 0: draw again
                return images, masks[:, visible], tracker_prompt(masks[0][visible], rng, self.prompt_mix)

    @torch.no_grad()
    def held_out_loss(self) -> float:
        self.model.tracker.eval()
        clips = self._held_out()[self.workers.rank::self.workers.world]  # each rank its share
        total = sum(float(self._clip_loss(images, masks, TrackerPrompt(use_masks=True))) for images, masks in clips)
        total, count = self.workers.sum([total, len(clips)])
        return total / count

    def _held_out(self) -> list[tuple[list[np.ndarray], np.ndarray]]:
        """Fixed clips: no augmentation, the lowest track ids, GT-mask conditioning (as at run
        time, where keyframes hand detector masks to the tracker); built once."""
        if self._held_out_inputs is None:
            self._held_out_inputs = [
                ([frame.image() for frame in clip.frames],
                 clip_masks(clip, clip.track_ids[:self.max_objects]))
                for clip in self.held_out_clips]
        return self._held_out_inputs

    def _clip_loss(self, images: Sequence[np.ndarray], masks: np.ndarray, prompt: TrackerPrompt
                   ) -> torch.Tensor:
        """Condition on frame 0, propagate through the rest; mean loss over predicted frames.
        `masks`: T x K x H x W bool, every object visible in frame 0."""
        model, tracker = self.model, self.model.tracker
        size, device = model.image_size, model.device
        frames, objects, height, width = masks.shape
        with cpu_redirect(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
            batch = torch.stack([preprocess_image(image, size, device) for image in images])
            with torch.no_grad():  # the frozen perception encoder
                neck = model.detector.backbone.forward_image(batch)["sam2_backbone_out"]
            levels, positions = tracker_levels(tracker, neck)
            targets = model_masks(masks.reshape(-1, height, width), size, device)
            targets = targets.reshape(frames, objects, size, size).float()
            memory: dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
            losses = []
            for index in range(frames):
                conditioning = index == 0
                mask_inputs = point_inputs = None
                if conditioning and prompt.use_masks:
                    mask_inputs = keyframe_mask_inputs(tracker, torch.from_numpy(masks[0]).to(device))
                elif conditioning:
                    scale = torch.tensor([size / width, size / height], device=device)
                    point_inputs = {
                        "point_coords": torch.from_numpy(prompt.points).to(device) * scale,
                        "point_labels": torch.from_numpy(prompt.labels).to(device)}
                feats, pos, sizes = frame_features(tracker, levels, positions, index, objects)
                out = tracker.track_step(
                    frame_idx=index, is_init_cond_frame=conditioning, current_vision_feats=feats,
                    current_vision_pos_embeds=pos, feat_sizes=sizes, image=None,
                    point_inputs=point_inputs, mask_inputs=mask_inputs, output_dict=memory,
                    # As TrackerStream: frames seen so far (sets the pointers' temporal scale).
                    num_frames=index + 1, run_mem_encoder=True)
                memory["cond_frame_outputs" if conditioning else "non_cond_frame_outputs"][index] = out
                if mask_inputs is None:  # a mask-conditioned frame outputs its input: no signal
                    losses.append(mask_and_presence_loss(out["pred_masks_high_res"],
                                                         out["object_score_logits"], targets[index]))
        return torch.stack(losses).mean()


class _TrackerStep(nn.Module):
    """The training forward as one module holding the tracker, so DistributedDataParallel
    wraps exactly what trains: the mean loss of this rank's clips."""

    def __init__(self, tracker: nn.Module, clip_loss):
        super().__init__()
        self.tracker, self.clip_loss = tracker, clip_loss

    def forward(self, clips) -> torch.Tensor:
        losses = []
        for images, masks, prompt, dropout_seed in clips:
            # Dropout from the clip's own seed: the same masks whichever rank trains the clip.
            device = next(self.tracker.parameters()).device
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(dropout_seed)
                losses.append(self.clip_loss(images, masks, prompt))
        return torch.stack(losses).mean()


def tracker_levels(tracker: nn.Module, neck: dict) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The second neck's levels projected for the SAM decoder (as Sam3VideoBase and
    TrackerStream do), for all frames of a batch at once."""
    decoder = tracker.sam_mask_decoder
    fpn = neck["backbone_fpn"]
    return [decoder.conv_s0(fpn[0]), decoder.conv_s1(fpn[1]), *fpn[2:]], list(neck["vision_pos_enc"])


def frame_features(tracker: nn.Module, levels: Sequence[torch.Tensor],
                   positions: Sequence[torch.Tensor], frame: int, objects: int):
    """One frame's tracker inputs, one copy per object (the tracker batches objects)."""
    _, feats, pos, sizes = tracker._prepare_backbone_features({
        "backbone_fpn": [level[frame:frame + 1].expand(objects, -1, -1, -1) for level in levels],
        "vision_pos_enc": [p[frame:frame + 1].expand(objects, -1, -1, -1) for p in positions]})
    return feats, pos, sizes


def keyframe_mask_inputs(tracker: nn.Module, masks: torch.Tensor) -> torch.Tensor:
    """K x H x W bool -> the tracker's mask prompt, resized as TrackerStream.keyframe does."""
    size = tracker.input_mask_size
    return F.interpolate(masks[:, None].float(), size=(size, size), mode="bilinear",
                         align_corners=False, antialias=True)
