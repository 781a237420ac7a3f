"""Stage 1, spatial: the detector (fusion encoder, decoder, scoring, geometry encoder) and its
segmentation head, trained through sam3's own `Sam3Image.forward`, Hungarian matcher and
`Sam3LossWrapper` (box L1 + GIoU, IoU-aware classification with presence, mask focal + dice).

The ViT trunk and the text encoder are frozen (or, with `backbone_lr_scale > 0`, trained at that
fraction of the learning rate); the tracker's neck is never touched here, it belongs to stage 2's
frozen perception encoder. Held-out loss runs the model as inference does (eval mode: no
dropout, no one-to-many queries, final decoder layer only), so it is on a smaller scale than the
training loss, which also sums the auxiliary layers and the one-to-many queries.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Iterator, Sequence
from unittest import mock

import numpy as np
import torch
from torch import nn

from segmentation_node.perception.ontology import Ontology
from segmentation_node.sam3_backend.builder import Sam3Model
from segmentation_node.sam3_backend.device import cpu_redirect
from segmentation_node.sam3_backend.predictor import preprocess_image
from segmentation_node.training.augment import AugmentConfig, augment
from segmentation_node.training.data import (AnnotatedObject, DataError, Frame, annotated_objects,
                                             evenly_spaced, model_masks)
from segmentation_node.training.distributed import Workers, dropout_seed, sample_rng
from segmentation_node.training.prompts import PromptMix, Query, held_out_queries, training_queries

FROZEN_BACKBONE = ("backbone.vision_backbone.trunk.", "backbone.language_backbone.")
TRACKER_NECK = "backbone.vision_backbone.sam2_convs."
GRAD_CLIP_NORM = 0.1
SAMPLE_DRAWS = 20  # a training sample is drawn again while it has nothing to ask (augmentation hid it)
# Weights and matcher costs of sam3's image training recipe.
LOSS_WEIGHTS = {"loss_bbox": 5.0, "loss_giou": 2.0, "loss_ce": 20.0, "presence_loss": 20.0,
                "loss_mask": 200.0, "loss_dice": 10.0}
_CPU = torch.device("cpu")


def detector_matcher() -> nn.Module:
    from sam3.train.matcher import BinaryHungarianMatcherV2

    return BinaryHungarianMatcherV2(focal=True, cost_class=2.0, cost_bbox=5.0, cost_giou=2.0,
                                    alpha=0.25, gamma=2, stable=False)


def detector_loss(matcher: nn.Module, normalization: str = "local") -> nn.Module:
    """`normalization`: "local" divides by the boxes of this process's batch; "global" by the
    mean per rank of all ranks' boxes, so DDP's gradient average is the gradient of the whole
    batch's loss (sam3's own recipe for data-parallel training)."""
    from sam3.train.loss.loss_fns import Boxes, IABCEMdetr, Masks
    from sam3.train.loss.sam3_loss import Sam3LossWrapper
    from sam3.train.matcher import BinaryOneToManyMatcher

    w = LOSS_WEIGHTS
    return Sam3LossWrapper(
        loss_fns_find=[
            Boxes(weight_dict={"loss_bbox": w["loss_bbox"], "loss_giou": w["loss_giou"]}),
            # weak_loss: a query on a non-exhaustive (pseudo-labelled) image gets no negative
            # supervision, since an unlabelled object there may well be real.
            IABCEMdetr(pos_weight=10.0, weight_dict={"loss_ce": w["loss_ce"],
                                                     "presence_loss": w["presence_loss"]},
                       weak_loss=True, use_presence=True, alpha=0.25, gamma=2),
            Masks(weight_dict={"loss_mask": w["loss_mask"], "loss_dice": w["loss_dice"]},
                  focal_alpha=0.25, focal_gamma=2.0, compute_aux=False),
        ],
        normalization=normalization, matcher=matcher,
        o2m_matcher=BinaryOneToManyMatcher(alpha=0.3, threshold=0.4, topk=4), o2m_weight=2.0,
        use_o2m_matcher_on_o2m_aux=False)


@contextlib.contextmanager
def sam3_losses_on(device: torch.device) -> Iterator[None]:
    """sam3's losses call its Triton focal-loss kernel, which needs CUDA; elsewhere they get the
    same loss in plain torch."""
    if device.type == "cuda":
        yield
        return
    from sam3.train.loss import loss_fns

    with mock.patch.object(loss_fns, "sigmoid_focal_loss",
                           functools.partial(loss_fns.sigmoid_focal_loss, triton=False)):
        yield


def to_datapoint(image: np.ndarray, objects: Sequence[AnnotatedObject], queries: Sequence[Query],
                 exhaustive: bool, image_size: int):
    """One image with its objects and queries as sam3's training Datapoint: square normalised
    image, boxes as normalised cx cy w h, masks at the model resolution."""
    from sam3.train.data.sam3_image_dataset import (Datapoint, FindQueryLoaded, Image,
                                                    InferenceMetadata, Object)

    height, width = image.shape[:2]
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    masks = model_masks(np.stack([o.mask for o in objects]) if objects else
                        np.zeros((0, height, width), bool), image_size, _CPU)
    targets = [Object(bbox=_cxcywh(obj.box) / scale, area=float(obj.mask.mean()), object_id=index,
                      segment=mask) for index, (obj, mask) in enumerate(zip(objects, masks))]
    find_queries = []
    for query in queries:
        exemplar = query.exemplar_box is not None
        find_queries.append(FindQueryLoaded(
            query_text=query.text, image_id=0, object_ids_output=list(query.targets),
            is_exhaustive=exhaustive,
            input_bbox=(_cxcywh(query.exemplar_box) / scale)[None] if exemplar else None,
            input_bbox_label=torch.ones(1, dtype=torch.long) if exemplar else None,
            inference_metadata=InferenceMetadata(
                coco_image_id=0, original_image_id=0, original_category_id=0,
                original_size=(height, width), object_id=-1, frame_index=0)))
    return Datapoint(find_queries=find_queries, images=[Image(
        data=preprocess_image(image, image_size, _CPU), objects=targets, size=(image_size, image_size))])


class DetectorTrainer:
    name = "stage 1 (detector + segmentation head)"

    def __init__(self, model: Sam3Model, train_frames: Sequence[Frame],
                 held_out_frames: Sequence[Frame], ontology: Ontology, *, batch_size: int = 2,
                 lr: float = 1e-4, weight_decay: float = 0.05, backbone_lr_scale: float = 0.0,
                 held_out_limit: int = 32, augment_config: AugmentConfig = AugmentConfig(),
                 prompt_mix: PromptMix = PromptMix(), seed: int = 0, bf16: bool = False,
                 workers: Workers = Workers()):
        """`batch_size`: images per step over all ranks (each computes its share)."""
        if not train_frames or not held_out_frames:
            raise DataError("stage 1 needs training and held-out frames")
        workers.share(batch_size)  # refuses a batch the ranks cannot split
        self.model = model
        self.ontology = ontology
        self.train_frames = list(train_frames)
        self.held_out_frames = evenly_spaced(held_out_frames, held_out_limit)
        self.batch_size = batch_size
        self.augment_config = augment_config
        self.prompt_mix = prompt_mix
        self.bf16 = bf16
        self.seed, self.workers, self.steps_done = seed, workers, 0
        self.matcher = detector_matcher()
        self.loss = detector_loss(self.matcher, "global" if workers.distributed else "local")
        self.held_out_loss_fn = detector_loss(self.matcher)  # per batch: ranks see different counts
        self._step: nn.Module | None = None  # the training forward, DDP-wrapped when distributed
        self.backbone_lr_scale = backbone_lr_scale
        named = self._named_detector_parameters()
        groups = [{"params": [p for name, p in named if not name.startswith(FROZEN_BACKBONE)], "lr": lr}]
        if backbone_lr_scale > 0:
            groups.append({"params": [p for name, p in named if name.startswith(FROZEN_BACKBONE)],
                           "lr": lr * backbone_lr_scale})
        self.optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
        self._held_out_batches: list | None = None

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(name, p) for name, p in self._named_detector_parameters()
                if self.backbone_lr_scale > 0 or not name.startswith(FROZEN_BACKBONE)]

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        detector = self.model.detector
        transformer = detector.transformer
        saved_flags = {name: p.requires_grad for name, p in detector.named_parameters()}
        saved = (detector.matcher, transformer.encoder.use_act_checkpoint,
                 transformer.decoder.use_act_checkpoint)
        trainable = {name for name, _ in self.trainable_parameters()}
        for name, parameter in detector.named_parameters():
            parameter.requires_grad_(name in trainable)
        detector.matcher = self.matcher
        # sam3 asserts activation checkpointing in the fusion encoder and decoder in training.
        transformer.encoder.use_act_checkpoint = transformer.decoder.use_act_checkpoint = True
        self._step = self.workers.wrap(_DetectorStep(detector, self.loss))  # after requires_grad is set
        try:
            yield
        finally:
            self._step = None
            for name, parameter in detector.named_parameters():
                parameter.requires_grad_(saved_flags[name])
            (detector.matcher, transformer.encoder.use_act_checkpoint,
             transformer.decoder.use_act_checkpoint) = saved
            detector.eval()

    def train_step(self) -> float:
        """One step of the global batch; the loss of the whole batch (the same on every rank)."""
        detector = self.model.detector
        detector.train()
        if self.backbone_lr_scale == 0:  # frozen means no dropout noise either
            detector.backbone.vision_backbone.trunk.eval()
            detector.backbone.language_backbone.eval()
        batch = self._training_batch(self.steps_done)
        # Dropout from the step's own seed: a resumed run draws what the uninterrupted one did.
        torch.manual_seed(dropout_seed(self.seed, 1, self.steps_done, self.workers.rank))
        with self._compute_context():
            loss = self._step(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # DDP averages the gradients over the ranks here
        nn.utils.clip_grad_norm_([p for _, p in self.trainable_parameters()], GRAD_CLIP_NORM)
        self.optimizer.step()
        self.steps_done += 1
        # Each rank's loss is its part over the mean count per rank: their mean is the batch's.
        return self.workers.sum([float(loss.detach())])[0] / self.workers.world

    @torch.no_grad()
    def held_out_loss(self) -> float:
        from sam3.model.model_misc import SAM3Output
        from sam3.train.loss.loss_fns import CORE_LOSS_KEY

        detector = self.model.detector
        detector.eval()
        total, images = 0.0, 0
        batches = self._held_out()
        for batch, count in batches[self.workers.rank::self.workers.world]:  # each rank its share
            with self._compute_context():
                outputs = detector(batch)
                targets = [detector.back_convert(t) for t in batch.find_targets]
                # Eval mode skips sam3's matching (it is a training step); match here.
                with SAM3Output.iteration_mode(
                        outputs, iter_mode=SAM3Output.IterMode.ALL_STEPS_PER_STAGE) as stages:
                    for stage_outputs, stage_targets in zip(stages, targets):
                        for out in stage_outputs:
                            out["indices"] = self.matcher(out, stage_targets)
                losses = self.held_out_loss_fn(outputs, targets)
            total += float(losses[CORE_LOSS_KEY]) * count
            images += count
        total, images = self.workers.sum([total, images])
        return total / images

    def _named_detector_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(name, p) for name, p in self.model.detector.named_parameters()
                if not name.startswith(TRACKER_NECK)]

    def _compute_context(self) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        stack.enter_context(cpu_redirect())
        stack.enter_context(sam3_losses_on(self.model.device))
        stack.enter_context(torch.autocast(self.model.device.type, dtype=torch.bfloat16,
                                           enabled=self.bf16))
        return stack

    def _training_batch(self, step: int):
        """This rank's share of the step's samples: random frames, augmented, each with a fresh
        prompt mix, each from its own generator (distributed.py)."""
        datapoints = []
        for sample in self.workers.share(self.batch_size):
            rng = sample_rng(self.seed, 1, step, sample)
            for _ in range(SAMPLE_DRAWS):
                frame = self.train_frames[int(rng.integers(len(self.train_frames)))]
                image, masks = augment(frame.image(), frame.masks(), rng, self.augment_config)
                objects = annotated_objects(frame.instances, masks)
                queries = training_queries(objects, self.ontology, frame.exhaustive, rng,
                                           self.prompt_mix, frame.width, frame.height)
                # Augmentation can hide every object of an unlabelled-negatives image: nothing to ask.
                if queries:
                    break
            datapoints.append(to_datapoint(image, objects, queries, frame.exhaustive, self.model.image_size))
        if not any(d.find_queries for d in datapoints):
            raise DataError(f"step {step}: nothing to ask in {SAMPLE_DRAWS} draws per sample (no known objects?)")
        return self._collate(datapoints)

    def _held_out(self) -> list:
        """Fixed batches: no augmentation, the run-time question set; built once."""
        if self._held_out_batches is None:
            datapoints = []
            for frame in self.held_out_frames:
                objects = annotated_objects(frame.instances, frame.masks())
                queries = held_out_queries(objects, self.ontology, frame.exhaustive)
                if queries:
                    datapoints.append(to_datapoint(frame.image(), objects, queries,
                                                   frame.exhaustive, self.model.image_size))
            if not datapoints:
                raise DataError("no held-out frame has anything to ask (no known objects, "
                                "no exhaustive labels)")
            chunks = [datapoints[i:i + self.batch_size]
                      for i in range(0, len(datapoints), self.batch_size)]
            self._held_out_batches = [(self._collate(chunk), len(chunk)) for chunk in chunks]
        return self._held_out_batches

    def _collate(self, datapoints: list):
        from sam3.model.utils.misc import copy_data_to_device
        from sam3.train.data.collator import collate_fn_api

        batch = collate_fn_api(datapoints, dict_key="batch", with_seg_masks=True)["batch"]
        return copy_data_to_device(batch, self.model.device)


class _DetectorStep(nn.Module):
    """The training forward as one module, so DistributedDataParallel can wrap it: detector
    outputs and the loss of this rank's share of the batch."""

    def __init__(self, detector: nn.Module, loss: nn.Module):
        super().__init__()
        self.detector, self.loss = detector, loss

    def forward(self, batch) -> torch.Tensor:
        from sam3.train.loss.loss_fns import CORE_LOSS_KEY

        outputs = self.detector(batch)
        return self.loss(outputs, [self.detector.back_convert(t) for t in batch.find_targets])[CORE_LOSS_KEY]


def _cxcywh(box: Sequence[float]) -> torch.Tensor:
    x0, y0, x1, y1 = box
    return torch.tensor([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dtype=torch.float32)
