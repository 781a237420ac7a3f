"""The work of SAM3's stages, counted on the real architecture: floating-point operations and the
tensor elements its compute kernels read and write, per unit of work (a view, a prompt, a
view x prompt pair, a tracked object). No checkpoint: random weights count the same.

FLOPs use torch.utils.flop_counter's formulas (2 per multiply-accumulate). Memory traffic counts
the inputs, weights and outputs of every matmul and convolution, and of every attention call as
one fused kernel (queries, keys, values and output cross memory once; the score matrix stays on
chip, as in flash-style kernels and TensorRT's fused attention). Elementwise work is left to the
per-device efficiency factor (sizing.py): TensorRT fuses it into those kernels.

The ViT trunk and necks run on the meta device (shapes only, no compute). The detector head and
the tracker read tensor values (sam3's decoder takes feature sizes from a tensor, its caches live
on the CPU), so they run on the CPU with random weights and random features of the same shapes.
"""
from __future__ import annotations

import contextlib
import copy
import math
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, sdpa_flop_count

from segmentation_node.benchmarking import median_ms
from segmentation_node.masks import BoxedMask
from segmentation_node.sam3_backend.builder import Sam3Model, build_small_sam3
from segmentation_node.sam3_backend.device import cpu_redirect
from segmentation_node.sam3_backend.input_size import PATCH_SIZE
from segmentation_node.sam3_backend.predictor import run_grounding
from segmentation_node.sam3_backend.stream import KeyframeDetection, TrackerStream
from segmentation_node.sizing import (BACKBONE, HEAD, TEXT, TRACKER_KEYFRAME, TRACKER_STEP, ModelWork,
                                      StageWork)

class WorkCounter(TorchDispatchMode):
    """Sums FLOPs and kernel memory traffic (in elements) of the aten ops run inside it."""

    def __init__(self):
        super().__init__()
        self.flops = 0.0
        self.elements = 0.0
        self.opaque = False  # inside a kernel counted from its shapes: its parts are not counted

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        formula = flop_registry.get(func._overloadpacket)
        if formula is None and func is not torch.ops.prim.device.default:
            # Composite ops (linear, matmul, ...) reach the mode whole: count their parts, which
            # must come back through this mode (it is off while its own handler runs).
            with self:
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        out = func(*args, **kwargs)
        if formula is not None and not self.opaque:
            self.flops += formula(*args, **kwargs, out_val=out)
            self.elements += _elements((args, kwargs, out))
        return out

    def take(self) -> StageWork:
        work = StageWork(self.flops, self.elements)
        self.flops = self.elements = 0.0
        return work


class _FusedAttention(TorchFunctionMode):
    """Counts attention from its shapes, the core as one fused kernel: FLOPs with
    torch.utils.flop_counter's formula (the CPU kernel has no registered formula, the meta and
    masked paths decompose into batched matmuls), traffic as queries, keys, values and output
    (the score matrix stays on chip). nn.MultiheadAttention's body is opaque to function modes
    and its projections run as whatever matmul torch picks: it is counted whole from its shapes,
    projections as GEMMs around that core."""

    def __init__(self, counter: WorkCounter):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention and func is not F.multi_head_attention_forward:
            return func(*args, **kwargs)
        self.counter.opaque = True
        try:
            out = func(*args, **kwargs)
        finally:
            self.counter.opaque = False
        if func is F.scaled_dot_product_attention:
            query, key, value = (tensor.shape for tensor in args[:3])
            self._core(query, key, value)
        else:
            heads = args[4] if len(args) > 4 else kwargs["num_heads"]
            self._multi_head(*(tensor.shape for tensor in args[:3]), heads)
        return out

    def _core(self, query, key, value) -> None:
        self.counter.flops += sdpa_flop_count(query, key, value)
        self.counter.elements += float(math.prod(query) * 2 + math.prod(key) + math.prod(value))

    def _multi_head(self, query, key, value, heads: int) -> None:
        """Shapes (length, batch, features) or unbatched (length, features)."""
        length, batch, width = query if len(query) == 3 else (query[0], 1, query[1])
        keys = key[0]
        for rows, features in ((length, width), (keys, key[-1]), (keys, value[-1]), (length, width)):
            # in-projections of queries, keys and values; the output projection
            self.counter.flops += 2.0 * rows * batch * features * width
            self.counter.elements += float(rows * batch * (features + width) + features * width)
        head = (batch, heads, length, width // heads)
        self._core(head, (batch, heads, keys, width // heads), (batch, heads, keys, width // heads))


def _elements(tree) -> float:
    """Floating-point elements held in memory by the tensors of `tree`: an expanded (stride 0)
    dimension is one copy (a weight broadcast over a batch is read once)."""
    total = 0
    for leaf in torch.utils._pytree.tree_leaves(tree):
        if isinstance(leaf, torch.Tensor) and leaf.is_floating_point():
            total += math.prod(size for size, stride in zip(leaf.shape, leaf.stride()) if stride)
    return float(total)


@contextlib.contextmanager
def counting(counter: WorkCounter) -> Iterator[None]:
    # The MultiheadAttention fast path is one opaque aten op that flop_counter cannot see into.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with _FusedAttention(counter), counter:
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def count_model(model: Sam3Model, memory_frames: int = 6) -> ModelWork:
    """Per-unit and per-batch work of every stage of `model`; the backbone runs on a meta copy.
    Backbone, text encoder and detector head are counted on batches of one and two units (their
    weights are read once per batch); the tracker on one object (its weights are a few % of a
    step's traffic, counted per object: a slight over-estimate)."""
    one = count_runs(stage_runs(model, memory_frames, meta_backbone=True, units=1))
    two = count_runs(stage_runs(model, memory_frames, meta_backbone=True, units=2, tracker=False))
    stages = {stage: StageWork.fit(work, two[stage]) if stage in two else work
              for stage, work in one.items()}
    return ModelWork(model.model_version, model.image_size, _memory_frames(model, memory_frames), stages)


def count_runs(runs: Iterator[tuple[str, Callable[[], object]]]) -> dict[str, StageWork]:
    counter = WorkCounter()
    stages = {}
    with torch.inference_mode(), cpu_redirect():
        for stage, run in runs:
            with counting(counter):
                run()
            stages[stage] = counter.take()
    return stages


def time_model(model: Sam3Model, memory_frames: int = 6, repeats: int = 3) -> dict[str, float]:
    """Median milliseconds of one unit of every stage of `model`, run for real on its device."""
    timings = {}
    with torch.inference_mode(), cpu_redirect():
        for stage, run in stage_runs(model, memory_frames, meta_backbone=False):
            timings[stage] = median_ms(run, repeats)
    return timings


def stage_runs(model: Sam3Model, memory_frames: int, meta_backbone: bool, units: int = 1,
               tracker: bool = True) -> Iterator[tuple[str, Callable[[], object]]]:
    """Every stage on a batch of `units`, as the backend runs them: the backbone on that many
    views, the text encoder on that many prompts, the detector head on one view x that many
    prompts; then (`tracker`) the tracker conditioned on one object, and one tracker step in the
    steady state (a conditioning keyframe and `memory_frames` past frames in memory, as
    TrackerStream keeps them). Run each callable before asking for the next stage (under
    inference_mode and cpu_redirect). meta_backbone: shapes only (no compute); the later stages
    get random features of its shapes."""
    size, backbone = model.image_size, model.detector.backbone
    prompts = ["metal part"] * units  # one length: the text encoder pads to the longest
    state = {}

    images = (torch.empty(units, 3, size, size, device="meta") if meta_backbone
              else torch.randn(units, 3, size, size, device=model.device))

    def run_backbone() -> None:
        if meta_backbone:
            with _on_meta(backbone, "vision_backbone"):
                state["features"] = backbone.forward_image(images)
        else:
            state["features"] = backbone.forward_image(images)

    yield BACKBONE, run_backbone
    features = _random_like(state["features"], model.device) if meta_backbone else state["features"]

    def run_text() -> None:
        state["text"] = backbone.forward_text(prompts, device=model.device)

    yield TEXT, run_text
    yield HEAD, lambda: run_grounding(model.detector, {**features, **state["text"]}, views=1,
                                      prompts=units)
    if not tracker:
        return
    stream = TrackerStream(model, max_objects=1, max_memory_frames=memory_frames)
    mask = np.zeros((size // 4, size // 4), bool)  # one part (its values do not change the count)
    mask[size // 16:size // 8, size // 16:size // 8] = True
    detection = KeyframeDetection("metal part", 0.9, BoxedMask.from_array(mask))
    yield TRACKER_KEYFRAME, lambda: stream.keyframe(features, 0, [detection])
    with _every_memory_frame_selected(model.tracker):
        for _ in range(stream.max_memory_frames):
            stream.propagate(features, 0)  # fill the memory bank; later steps keep it full
        yield TRACKER_STEP, lambda: stream.propagate(features, 0)


def measure_small_model(image_size: int = 224, repeats: int = 3) -> tuple[ModelWork, dict[str, float]]:
    """The small random-weight model's counted work and measured times per stage, on the CPU."""
    model = build_small_sam3(image_size=image_size, device="cpu")
    return count_model(model), time_model(model, repeats=repeats)


def _memory_frames(model: Sam3Model, memory_frames: int) -> int:
    return min(memory_frames, model.tracker.num_maskmem - 1)  # as TrackerStream caps it


@contextlib.contextmanager
def _every_memory_frame_selected(tracker: torch.nn.Module) -> Iterator[None]:
    """The budget is the worst case: every kept frame passes the tracker's memory selection
    (random weights would score most frames below its threshold)."""
    threshold, tracker.mf_threshold = tracker.mf_threshold, float("-inf")
    try:
        yield
    finally:
        tracker.mf_threshold = threshold


@contextlib.contextmanager
def _on_meta(parent: torch.nn.Module, name: str) -> Iterator[None]:
    """A meta-device copy of the submodule in its place (shapes only, no compute); the rest of
    the model stays where it is."""
    original = getattr(parent, name)
    setattr(parent, name, copy.deepcopy(original).to("meta"))
    try:
        yield
    finally:
        setattr(parent, name, original)


def _random_like(tree, device: torch.device):
    """Real tensors of the meta tensors' shapes (random floats, zero integers and masks)."""
    def real(leaf):
        if not isinstance(leaf, torch.Tensor):
            return leaf
        if leaf.is_floating_point():
            return torch.randn(leaf.shape, dtype=leaf.dtype, device=device)
        return torch.zeros(leaf.shape, dtype=leaf.dtype, device=device)
    return torch.utils._pytree.tree_map(real, tree)


def trunk_flops(model: Sam3Model) -> float:
    """The ViT trunk alone, counted on a meta copy (compare with vit_matmul_flops)."""
    trunk = copy.deepcopy(model.detector.backbone.vision_backbone.trunk).to("meta")
    counter = WorkCounter()
    with torch.inference_mode(), counting(counter):
        trunk(torch.empty(1, 3, model.image_size, model.image_size, device="meta"))
    return counter.flops


def vit_matmul_flops(image_size: int, width: int, depth: int, window: int,
                     global_blocks: tuple[int, ...], mlp_ratio: float = 4.625) -> float:
    """The ViT trunk's matmul FLOPs from its dimensions alone (the independent check of the
    counter): patch embedding, and per block the qkv / output projections and attention (window
    blocks on the grid padded to whole windows) and the MLP on the grid's tokens."""
    grid = image_size // PATCH_SIZE
    tokens = grid * grid
    hidden = int(width * mlp_ratio)
    flops = 2.0 * tokens * width * 3 * PATCH_SIZE * PATCH_SIZE
    for block in range(depth):
        if block in global_blocks:
            attended, sequence = tokens, tokens
        else:
            padded = math.ceil(grid / window) * window
            attended, sequence = padded * padded, window * window
        flops += 2.0 * attended * width * 4 * width      # qkv (3C) and output (C) projections
        flops += 2.0 * 2 * attended * sequence * width   # scores and weighted values
        flops += 2.0 * 2 * tokens * width * hidden       # MLP up and down
    return flops
