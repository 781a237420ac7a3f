"""`Sam3TrtBackend`: `Sam3Backend` with its heavy stages run by TensorRT engines.

The backbone engine (one engine, all views in one batch) and, when exported, the detector
engine replace the torch modules through the predictor's stage hooks (`image_encoder`,
`grounding_head`); text encoding, result selection and the tracker stay in torch, so keyframe
matching, track ids and bounded stream state are `Sam3Backend`'s own code.

Engines have static shapes. The adapters here map any call onto them: views in chunks of the
engine's batch (the last chunk padded), fewer prompts padded (queries are independent), more
views or prompts than the detector engine takes fall back to the torch detector.

The adapters take any stage runner with the `StageRunner` shape: `TrtStage` here, or
`onnx_export.OnnxRuntimeStage`, which lets CPU-only machines test this path.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Protocol

import torch

from segmentation_node.sam3_backend.backend import Sam3Backend
from segmentation_node.sam3_backend.builder import Sam3Model
from segmentation_node.sam3_backend.engine_cache import EngineCache
from segmentation_node.sam3_backend.onnx_export import (BackboneStage, DetectorStage, ExportConfig,
                                                        ExportedStage, ensure_exported)
from segmentation_node.sam3_backend.predictor import run_grounding
from segmentation_node.sam3_backend.onnx_precision import stage_precision
from segmentation_node.sam3_backend.trt_engine import ensure_engine, import_tensorrt, require_tensorrt_and_gpu

log = logging.getLogger(__name__)


class StageRunner(Protocol):
    """An exported stage made callable: flat tensors in sidecar order in, outputs out."""

    exported: ExportedStage
    label: str  # e.g. "tensorrt-fp16", "onnxruntime-cpu"

    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]: ...


class TrtStage:
    """A TensorRT engine of static shapes: device buffers allocated once, a CUDA stream of its
    own, and pinned host buffers to stage inputs that arrive on the CPU."""

    def __init__(self, plan_path: Path | str, exported: ExportedStage, precision: str):
        trt = import_tensorrt()
        self.exported = exported
        self.label = f"tensorrt-{precision}"
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT cannot load the engine {plan_path} (built for another "
                               "GPU or TensorRT version?)")
        self.context = self.engine.create_execution_context()
        self.input_names = list(exported.sidecar["inputs"])
        self.output_names = list(exported.sidecar["outputs"])
        self._buffers = {
            name: torch.empty(tuple(self.engine.get_tensor_shape(name)), device="cuda",
                              dtype=_torch_dtype(trt, self.engine.get_tensor_dtype(name)))
            for name in self.input_names + self.output_names}
        for name, buffer in self._buffers.items():
            self.context.set_tensor_address(name, buffer.data_ptr())
        self._pinned = {name: torch.empty_like(self._buffers[name], device="cpu").pin_memory()
                        for name in self.input_names}
        self._stream = torch.cuda.Stream()
        self._staged = torch.cuda.Event()  # the pinned buffers' last upload

    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        caller = torch.cuda.current_stream()
        self._stream.wait_stream(caller)  # inputs may still be in flight on the caller's stream
        self._staged.synchronize()  # the previous upload has left the pinned buffers
        with torch.cuda.stream(self._stream):
            for name, tensor in zip(self.input_names, inputs, strict=True):
                buffer = self._buffers[name]
                if tensor.shape != buffer.shape:
                    raise ValueError(f"{self.exported.stage} engine input {name} is "
                                     f"{tuple(buffer.shape)}, got {tuple(tensor.shape)}")
                if tensor.is_cuda:
                    buffer.copy_(tensor)
                else:
                    self._pinned[name].copy_(tensor)
                    buffer.copy_(self._pinned[name], non_blocking=True)
            self._staged.record(self._stream)
            if not self.context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError(f"TensorRT failed to run the {self.exported.stage} engine")
            # Copies: the buffers are overwritten by the next call, results live longer.
            outputs = [self._buffers[name].clone() for name in self.output_names]
        caller.wait_stream(self._stream)
        for output in outputs:
            output.record_stream(caller)
        return outputs


class EngineImageEncoder:
    """The predictor's `image_encoder` on a backbone runner of fixed batch."""

    def __init__(self, model: Sam3Model, runner: StageRunner):
        config = ExportConfig(**runner.exported.sidecar["config"])
        self.stage = BackboneStage(model, config)  # for assemble(): positions, dict layout
        self.runner = runner
        self.batch = config.views

    def __call__(self, images: torch.Tensor) -> dict:
        chunks = []
        for start in range(0, len(images), self.batch):
            chunk = images[start:start + self.batch]
            outputs = self.runner(_pad(chunk, self.batch, dim=0))
            chunks.append([output[:len(chunk)] for output in outputs])
        return self.stage.assemble([torch.cat(level) for level in zip(*chunks)])


class EngineGroundingHead:
    """The predictor's `grounding_head` on a detector runner of fixed views x prompts."""

    def __init__(self, model: Sam3Model, runner: StageRunner):
        config = ExportConfig(**runner.exported.sidecar["config"])
        self.detector = model.detector
        self.runner = runner
        self.views, self.prompts = config.views, config.prompts
        self._warned = False

    def __call__(self, backbone_out: dict, views: int, prompts: int) -> dict:
        if views > self.views or prompts > self.prompts:
            if not self._warned:
                log.warning("%d views x %d prompts exceed the detector engine's %d x %d: the "
                            "torch detector runs instead", views, prompts, self.views, self.prompts)
                self._warned = True
            return run_grounding(self.detector, backbone_out, views, prompts)
        *levels, text, text_mask = DetectorStage.inputs_from(backbone_out)
        outputs = self.runner(*[_pad(level, self.views, dim=0) for level in levels],
                              _pad(text, self.prompts, dim=1),  # seq x prompts x C
                              _pad(text_mask, self.prompts, dim=0))  # prompts x seq
        # Engine query v * self.prompts + p is the caller's query v * prompts + p.
        device = outputs[0].device
        queries = (torch.arange(views, device=device)[:, None] * self.prompts
                   + torch.arange(prompts, device=device)).flatten()
        return {name: output[queries] for name, output in zip(DetectorStage.output_names, outputs)}


class Sam3TrtBackend(Sam3Backend):
    """`Sam3Backend` with the backbone (and optionally the detector) on engines."""

    name = "sam3_trt"

    def __init__(self, model: Sam3Model, backbone: StageRunner, detector: StageRunner | None = None,
                 **backend_options):
        super().__init__(
            model, **backend_options, image_encoder=EngineImageEncoder(model, backbone),
            grounding_head=EngineGroundingHead(model, detector) if detector else None)
        self.model_version = f"{model.model_version}+{backbone.label}"


def build_trt_backend(model: Sam3Model, engine_cache_dir: Path | str, precision: str = "fp16",
                      views: int = 2, prompts: int | None = None,
                      calibration_images: Path | str | None = None,
                      **backend_options) -> Sam3TrtBackend:
    """Export (or reuse) the ONNX of `model`'s stages and build (or reuse) their engines under
    `engine_cache_dir`, then the backend. `prompts` None: the detector stays in torch.
    Raises RuntimeError (TensorRtUnavailable) when TensorRT or a CUDA GPU is missing."""
    require_tensorrt_and_gpu()
    if model.device.type != "cuda":
        raise RuntimeError(f"the model is on {model.device}: build it on the CUDA GPU "
                           "(engines read and write GPU memory)")
    # The backbone does not depend on the prompt count: a new count must not rebuild it.
    configs = {"backbone": ExportConfig(views, model.image_size)}
    if prompts:
        configs["detector"] = ExportConfig(views, model.image_size, prompts)
    onnx_root = (Path(engine_cache_dir) / "onnx"
                 / re.sub(r"[^A-Za-z0-9._-]", "_", model.model_version))
    cache = EngineCache(engine_cache_dir)
    runners = {}
    for stage, config in configs.items():
        onnx_dir = onnx_root / f"{stage}-v{config.views}-s{config.image_size}-p{config.prompts}"
        exported = ensure_exported(model, config, stage, onnx_dir)
        plan = ensure_engine(cache, exported, precision, calibration_images)
        runners[stage] = TrtStage(plan, exported, stage_precision(stage, precision))
    return Sam3TrtBackend(model, runners["backbone"], runners.get("detector"), **backend_options)


def _pad(tensor: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Fill `dim` up to `size` by repeating the last entry (valid data, results discarded)."""
    missing = size - tensor.shape[dim]
    if missing <= 0:
        return tensor
    last = tensor.narrow(dim, tensor.shape[dim] - 1, 1)
    return torch.cat([tensor, *[last] * missing], dim=dim)


def _torch_dtype(trt, dtype) -> torch.dtype:
    for name, torch_dtype in (("FLOAT", torch.float32), ("HALF", torch.float16),
                              ("BOOL", torch.bool), ("INT32", torch.int32),
                              ("INT64", torch.int64), ("INT8", torch.int8)):
        if getattr(trt.DataType, name, None) == dtype:  # INT64 only from TensorRT 9 on
            return torch_dtype
    raise TypeError(f"unsupported engine tensor type {dtype}")
