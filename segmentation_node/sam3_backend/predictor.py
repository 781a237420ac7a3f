"""Stateless SAM3 image prediction: RGB images + text prompts -> masks, scores, boxes.

All views go through the backbone as one batch, and all (view, prompt) pairs through the fusion
encoder, decoder and segmentation head as one batch of "find" queries (`FindStage.img_ids` /
`text_ids`), so one model serves every view in one call.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from segmentation_node.masks import BoxedMask
from segmentation_node.sam3_backend.builder import Sam3Model
from segmentation_node.sam3_backend.device import cpu_redirect

IMAGE_MEAN = 0.5  # sam3's normalisation: (x - 0.5) / 0.5 on [0, 1] pixels
IMAGE_STD = 0.5

# Swappable stages (e.g. TensorRT engines, see trt_backend.py); None means the torch modules.
# Backbone: normalised N x 3 x S x S batch -> sam3's backbone_out dict.
ImageEncoder = Callable[[torch.Tensor], dict]
# Detector head: (backbone_out with text features, views, prompts) -> forward_grounding's output.
GroundingHead = Callable[[dict, int, int], dict]


@dataclass(eq=False)
class PromptResult:
    """What one text prompt found in one image, best first."""

    prompt: str
    masks: list[BoxedMask]  # N, at the input image size
    scores: np.ndarray  # N float32 in [0, 1]
    boxes: np.ndarray   # N x 4 float32 xyxy pixels

    def __len__(self) -> int:
        return len(self.scores)


class Sam3Predictor:
    """Runs the SAM3 detector. Between calls it keeps only the text features of the last prompt
    set (a pure function of the prompts: the text encoder runs once per intent, not per
    keyframe)."""

    def __init__(self, model: Sam3Model, score_threshold: float = 0.5, max_detections: int = 20,
                 nms_iou: float = 0.7, image_encoder: ImageEncoder | None = None,
                 grounding_head: GroundingHead | None = None):
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        if max_detections < 1:
            raise ValueError(f"max_detections must be >= 1, got {max_detections}")
        self.model = model
        self.score_threshold = score_threshold
        self.max_detections = max_detections
        self.nms_iou = nms_iou
        self.image_encoder = image_encoder
        self.grounding_head = grounding_head
        self._text: tuple[tuple[str, ...], dict] | None = None  # (prompts, their text features)

    def predict(self, image: np.ndarray, prompts: Sequence[str]) -> list[PromptResult]:
        """One image, several prompts."""
        return self.predict_batch([image], prompts)[0]

    def predict_batch(self, images: Sequence[np.ndarray], prompts: Sequence[str]
                      ) -> list[list[PromptResult]]:
        """Several images (one backbone batch), several prompts: results[view][prompt]."""
        with torch.inference_mode(), cpu_redirect():
            backbone_out = self.encode_images(images)
            return self.detect(backbone_out, [image.shape[:2] for image in images], prompts)

    def encode_images(self, images: Sequence[np.ndarray]) -> dict:
        """Backbone features for a batch of images (call under inference_mode + cpu_redirect)."""
        if not images:
            raise ValueError("need at least one image")
        for image in images:
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {image.dtype} "
                                 f"{image.shape}")
        batch = torch.stack([preprocess_image(image, self.model.image_size, self.model.device)
                             for image in images])
        # Looked up per call, not bound at construction, so the torch module stays replaceable.
        encode = self.image_encoder or self.model.detector.backbone.forward_image
        return encode(batch)

    def detect(self, backbone_out: dict, image_sizes: Sequence[tuple[int, int]],
               prompts: Sequence[str]) -> list[list[PromptResult]]:
        if not prompts:
            return [[] for _ in image_sizes]
        detector = self.model.detector
        views, n_prompts = len(image_sizes), len(prompts)
        text_out = self.encode_text(prompts)
        ground = self.grounding_head or partial(run_grounding, detector)
        out = ground({**backbone_out, **text_out}, views, n_prompts)
        # Instance score = query probability x image-level presence probability (as sam3 does).
        scores = out["pred_logits"].sigmoid().squeeze(-1) * out["presence_logit_dec"].sigmoid()
        results = []
        for view, (height, width) in enumerate(image_sizes):
            row = []
            for index, prompt in enumerate(prompts):
                query = view * n_prompts + index
                row.append(self._select(prompt, scores[query], out["pred_boxes"][query],
                                        out["pred_masks"][query], height, width))
            results.append(row)
        return results

    def encode_text(self, prompts: Sequence[str]) -> dict:
        """Text features of `prompts` (call under inference_mode + cpu_redirect), reused while the
        prompt set stays the same."""
        key = tuple(prompts)
        if self._text is None or self._text[0] != key:
            self._text = key, self.model.detector.backbone.forward_text(list(key), device=self.model.device)
        return self._text[1]

    def _select(self, prompt: str, scores: torch.Tensor, boxes_cxcywh: torch.Tensor,
                mask_logits: torch.Tensor, height: int, width: int) -> PromptResult:
        from sam3.model.box_ops import box_cxcywh_to_xyxy
        from torchvision.ops import nms

        keep = torch.nonzero(scores >= self.score_threshold).squeeze(1)
        scale = torch.tensor([width, height, width, height], dtype=torch.float32,
                             device=scores.device)
        boxes = box_cxcywh_to_xyxy(boxes_cxcywh[keep].float()) * scale
        # Duplicates of one instance would crowd out the rest under max_detections.
        keep = keep[nms(boxes, scores[keep].float(), self.nms_iou)][: self.max_detections]
        boxes = box_cxcywh_to_xyxy(boxes_cxcywh[keep].float()) * scale
        masks = [BoxedMask.from_logits(logits, height, width) for logits in mask_logits[keep].float().cpu().numpy()]
        return PromptResult(prompt=prompt, masks=masks,
                            scores=scores[keep].float().clamp(0, 1).cpu().numpy(),
                            boxes=boxes.cpu().numpy())


def preprocess_image(image: np.ndarray, size: int, device: torch.device) -> torch.Tensor:
    """H x W x 3 uint8 RGB -> the normalised 3 x size x size input of the backbone."""
    pixels = torch.from_numpy(np.ascontiguousarray(image)).to(device)
    pixels = pixels.permute(2, 0, 1).float().div_(255.0).unsqueeze(0)
    # sam3 squashes any aspect ratio into its square input; masks are resized back.
    pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False,
                           antialias=True)
    return ((pixels - IMAGE_MEAN) / IMAGE_STD).squeeze(0)


def run_grounding(detector: torch.nn.Module, backbone_out: dict, views: int, prompts: int) -> dict:
    """The detector after the backbones: fusion encoder, decoder and segmentation head on one
    batch of queries pairing every view with every prompt, view-major (query = view x prompts +
    prompt). `backbone_out` holds the image and the text features."""
    from sam3.model.data_misc import FindStage

    device = backbone_out["backbone_fpn"][0].device
    img_ids = torch.arange(views, device=device).repeat_interleave(prompts)
    text_ids = torch.arange(prompts, device=device).repeat(views)
    find_input = FindStage(img_ids=img_ids, text_ids=text_ids, input_boxes=None,
                           input_boxes_mask=None, input_boxes_label=None, input_points=None,
                           input_points_mask=None)
    return detector.forward_grounding(
        backbone_out=backbone_out, find_input=find_input, find_target=None,
        geometric_prompt=detector._get_dummy_prompt(num_prompts=views * prompts))
