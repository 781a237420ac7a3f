"""`Sam3Backend`: the SAM3 detector and tracker behind the `SegmentationBackend` protocol."""
from __future__ import annotations

from typing import Sequence

import torch

from segmentation_node.perception.types import CameraFrame, Detection, Prompt
from segmentation_node.sam3_backend.builder import Sam3Model
from segmentation_node.sam3_backend.device import cpu_redirect
from segmentation_node.sam3_backend.predictor import GroundingHead, ImageEncoder, Sam3Predictor
from segmentation_node.sam3_backend.stream import KeyframeDetection, TrackerStream


class Sam3BackendError(RuntimeError):
    """SAM3 failed on a frame set; the stream state was reset."""


class Sam3Backend:
    """Keyframes run the detector on all views in one batch; other frames propagate each view's
    tracks with the SAM3 tracker from the same backbone pass. Stream state is per camera and
    bounded by `max_objects` and `max_memory_frames`."""

    name = "sam3"

    def __init__(self, model: Sam3Model, score_threshold: float = 0.5, max_detections: int = 20,
                 max_objects: int = 16, max_memory_frames: int = 6, match_iou: float = 0.3,
                 image_encoder: ImageEncoder | None = None,
                 grounding_head: GroundingHead | None = None):
        self.model = model
        self.model_version = model.model_version
        self.predictor = Sam3Predictor(model, score_threshold, max_detections,
                                       image_encoder=image_encoder, grounding_head=grounding_head)
        self.max_objects = max_objects
        self.max_memory_frames = max_memory_frames
        self.match_iou = match_iou
        self.streams: dict[str, TrackerStream] = {}
        self._prompts: tuple[Prompt, ...] = ()

    def process(self, views: Sequence[CameraFrame], prompts: Sequence[Prompt],
                keyframe: bool) -> list[list[Detection]]:
        if not views:
            return []
        prompts = tuple(prompts)
        # Tracks answer the prompts of their keyframe: new prompts need a detector pass.
        keyframe = keyframe or prompts != self._prompts or any(
            view.camera not in self.streams for view in views)
        try:
            return self._process(views, prompts, keyframe)
        except Exception as error:
            self.reset()
            raise Sam3BackendError(f"SAM3 ({self.model_version}) failed on "
                                   f"{'a keyframe' if keyframe else 'propagation'} of "
                                   f"{len(views)} view(s): {type(error).__name__}: {error}"
                                   ) from error

    def reset(self) -> None:
        self.streams.clear()
        self._prompts = ()

    def _process(self, views: Sequence[CameraFrame], prompts: tuple[Prompt, ...],
                 keyframe: bool) -> list[list[Detection]]:
        by_text = {prompt.text: prompt for prompt in prompts}
        images = [view.image for view in views]
        with torch.inference_mode(), cpu_redirect():
            backbone_out = self.predictor.encode_images(images)
            if keyframe:
                self._prompts = prompts
                results = self.predictor.detect(backbone_out, [image.shape[:2] for image in images],
                                                [prompt.text for prompt in prompts])
            tracks_per_view = []
            for index, view in enumerate(views):
                stream = self.streams.get(view.camera)
                if stream is None:
                    stream = self.streams[view.camera] = TrackerStream(
                        self.model, self.max_objects, self.max_memory_frames, self.match_iou)
                if keyframe:
                    found = [KeyframeDetection(result.prompt, float(score), mask,
                                               by_text[result.prompt].forbidden)
                             for result in results[index]
                             for score, mask in zip(result.scores, result.masks)]
                    tracks_per_view.append(stream.keyframe(backbone_out, index, found))
                else:
                    tracks_per_view.append(stream.propagate(backbone_out, index))
        return [[Detection(mask=track.mask, score=min(max(track.score, 0.0), 1.0),
                           label=by_text[track.prompt].label, prompt=track.prompt,
                           track_id=track.track_id, attributes=by_text[track.prompt].attributes)
                 for track in tracks if track.visible]
                for tracks in tracks_per_view]
