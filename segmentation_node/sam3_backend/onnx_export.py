"""Static-shape ONNX export of SAM3's heavy stages (for TensorRT, see trt_engine.py).

The TorchScript exporter fails on the ViT's RoPE (`view_as_complex`); the dynamo exporter
(`torch.onnx.export(..., dynamo=True)`, opset 18) handles it. Shapes are fixed at export from
an `ExportConfig`: views per call, input resolution and, for the detector, the prompt count.

Stages (each a small nn.Module over the model's own modules, flat tensors in and out):

- `backbone`: normalised images (views x 3 x S x S) -> the feature levels of both necks (the
  detector's and the tracker's "sam2" neck) that sam3 keeps (`scalp` drops the coarsest).
  Position encodings depend on the shape only, so they are not exported: `assemble()` adds
  them back (cached by sam3) and rebuilds the backbone_out dict the predictor and tracker read.
- `detector`: detector neck levels + text features of a fixed number of prompts -> raw
  detector outputs (fusion encoder, decoder, scoring, segmentation head), all views x prompts
  queries in one batch. The text encoder stays in torch: prompts change rarely, and tokens
  are strings.

The tracker's per-frame step is not exported: its memory bank (frames and objects) changes
size every frame, which a static-shape engine cannot take.

Each export writes `<out>/<stage>.onnx` (plus external weight files over 2 GB) and a JSON
sidecar `<out>/<stage>.json` with shapes, opset, versions, model_version and sha256s. Files go
to a temporary folder first and are renamed into place, the sidecar last: a reader verifies the
sha256s, so a torn or stale export is detected, never used.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import nn

from segmentation_node.atomic_io import atomic_write_bytes, file_sha256, fsync_directory, fsync_file
from segmentation_node.sam3_backend.builder import Sam3Model
from segmentation_node.sam3_backend.device import cpu_redirect
from segmentation_node.sam3_backend.input_size import check_image_size
from segmentation_node.sam3_backend.predictor import run_grounding

OPSET = 18
SIDECAR_FORMAT = 1
STAGE_NAMES = ("backbone", "detector")
SMALL_IMAGE_SIZE = 224  # the CLI's default for --small
EXAMPLE_PROMPT = "object"  # any text: the detector stage takes encoded features, not words


class ExportError(RuntimeError):
    """An export is missing, stale or does not match what the caller needs."""


@dataclass(frozen=True)
class ExportConfig:
    """The static shapes baked into the exported graphs."""

    views: int        # images per backbone call (all cameras in one batch)
    image_size: int   # square input resolution
    prompts: int = 1  # text prompts per detector call

    def __post_init__(self) -> None:
        if self.views < 1 or self.prompts < 1:
            raise ValueError(f"views and prompts must be >= 1, got views={self.views}, "
                             f"prompts={self.prompts}")
        check_image_size(self.image_size)


class BackboneStage(nn.Module):
    """ViT trunk + both necks: images -> kept feature levels, detector neck first."""

    name = "backbone"

    def __init__(self, model: Sam3Model, config: ExportConfig):
        super().__init__()
        _check_image_size(model, config)
        self.neck = model.detector.backbone.vision_backbone
        self.config = config
        # sam3 computes the coarsest `scalp` levels and then drops them: skip them here.
        self.levels = len(self.neck.convs) - model.detector.backbone.scalp
        self.input_names = ("images",)
        self.output_names = tuple(f"{neck}_{level}" for neck in self._necks()
                                  for level in range(self.levels))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.neck.trunk(images)[-1]
        return tuple(convs[level](features) for convs in self._necks().values()
                     for level in range(self.levels))

    def _necks(self) -> dict[str, nn.ModuleList]:
        """Output name prefix -> the neck's convolutions; the tracker's neck is optional."""
        necks = {"fpn": self.neck.convs}
        if self.neck.sam2_convs is not None:
            necks["sam2_fpn"] = self.neck.sam2_convs
        return necks

    def example_inputs(self, seed: int = 0) -> tuple[torch.Tensor, ...]:
        generator = torch.Generator().manual_seed(seed)
        size = self.config.image_size
        images = torch.rand(self.config.views, 3, size, size, generator=generator) * 2 - 1
        return (images.to(_device_of(self)),)

    def assemble(self, outputs: Sequence[torch.Tensor]) -> dict:
        """Flat stage outputs -> the dict `SAM3VLBackbone.forward_image` returns."""
        def neck_out(levels: list[torch.Tensor]) -> dict:
            positions = [self.neck.position_encoding(level).to(level.dtype) for level in levels]
            return {"vision_features": levels[-1], "vision_pos_enc": positions,
                    "backbone_fpn": levels}

        out = neck_out(list(outputs[: self.levels]))
        sam2 = list(outputs[self.levels:])
        out["sam2_backbone_out"] = neck_out(sam2) if sam2 else None
        return out


class DetectorStage(nn.Module):
    """Everything of the detector after the backbones, for views x prompts queries."""

    name = "detector"
    output_names = ("pred_logits", "pred_boxes", "pred_masks", "presence_logit_dec")

    def __init__(self, model: Sam3Model, config: ExportConfig):
        super().__init__()
        _check_image_size(model, config)
        self.model = model  # a plain object, not a submodule: example_inputs runs its backbone
        self.detector = model.detector
        self.config = config
        backbone = self.detector.backbone
        self.levels = len(backbone.vision_backbone.convs) - backbone.scalp
        self.input_names = (*(f"fpn_{level}" for level in range(self.levels)),
                            "language_features", "language_mask")

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        *levels, language_features, language_mask = inputs
        position_encoding = self.detector.backbone.vision_backbone.position_encoding
        backbone_out = {"backbone_fpn": levels,
                        "vision_pos_enc": [position_encoding(level) for level in levels],
                        "language_features": language_features, "language_mask": language_mask}
        out = run_grounding(self.detector, backbone_out, self.config.views, self.config.prompts)
        return tuple(out[name] for name in self.output_names)

    @staticmethod
    def inputs_from(backbone_out: dict) -> tuple[torch.Tensor, ...]:
        """The stage inputs from a backbone_out dict that holds the text features too."""
        return (*backbone_out["backbone_fpn"], backbone_out["language_features"],
                backbone_out["language_mask"])

    def example_inputs(self, seed: int = 0) -> tuple[torch.Tensor, ...]:
        backbone = BackboneStage(self.model, self.config)
        with torch.no_grad(), cpu_redirect():
            backbone_out = backbone.assemble(backbone(*backbone.example_inputs(seed)))
            text_out = self.detector.backbone.forward_text(
                [f"{EXAMPLE_PROMPT} {index}" for index in range(self.config.prompts)],
                device=_device_of(self))
        return self.inputs_from({**backbone_out, **text_out})


STAGES: dict[str, type[BackboneStage] | type[DetectorStage]] = {
    stage.name: stage for stage in (BackboneStage, DetectorStage)}


@dataclass(eq=False)
class ExportedStage:
    """A verified export on disk."""

    onnx_path: Path
    sidecar: dict

    @property
    def stage(self) -> str:
        return self.sidecar["stage"]

    @property
    def model_sha256(self) -> str:
        """Identity of the exported model: the .onnx file's sha256, combined with its external
        weight files' when it has any."""
        external = self.sidecar["external_data"]
        if not external:
            return self.sidecar["sha256"]
        digest = hashlib.sha256(self.sidecar["sha256"].encode())
        for entry in external:
            digest.update(entry["sha256"].encode())
        return digest.hexdigest()

    def input_shapes(self) -> dict[str, list[int]]:
        return {name: spec["shape"] for name, spec in self.sidecar["inputs"].items()}


def build_stage(model: Sam3Model, config: ExportConfig,
                stage: str) -> BackboneStage | DetectorStage:
    if stage not in STAGES:
        raise ValueError(f"unknown stage '{stage}'; stages: {', '.join(STAGES)}")
    return STAGES[stage](model, config).eval()


def export_stage(model: Sam3Model, config: ExportConfig, stage: str, out_dir: Path | str,
                 external_data: bool | None = None) -> ExportedStage:
    """Export one stage to `<out_dir>/<stage>.onnx` + `<stage>.json`, replacing any previous.
    external_data None: weights go to a separate file only when over protobuf's 2 GB."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wrapper = build_stage(model, config, stage)
    inputs = wrapper.example_inputs()
    with (torch.no_grad(), cpu_redirect(), _quiet_exporter(),
          _no_activation_checkpointing(wrapper)):
        # The eager call also fills the decoder's box-bias coordinate cache: traced cold, its
        # feature size comes from a tensor and export fails on the data-dependent value.
        outputs = wrapper(*inputs)
        # Strict (dynamo) capture: the non-strict default trips on that same cache check.
        captured = torch.export.export(wrapper, inputs, strict=True)
        program = torch.onnx.export(
            captured, inputs, dynamo=True, opset_version=OPSET, verbose=False,
            input_names=list(wrapper.input_names), output_names=list(wrapper.output_names))
    staging = Path(tempfile.mkdtemp(prefix=f".{stage}-export-", dir=out_dir))
    try:
        onnx_name = f"{stage}.onnx"
        program.save(str(staging / onnx_name), external_data=external_data)
        hashes = {}
        for path in staging.iterdir():
            fsync_file(path)
            hashes[path.name] = file_sha256(path)
        sidecar = {
            "format": SIDECAR_FORMAT, "stage": stage, "opset": OPSET,
            "config": {"views": config.views, "image_size": config.image_size,
                       "prompts": config.prompts},
            "inputs": _tensor_specs(wrapper.input_names, inputs),
            "outputs": _tensor_specs(wrapper.output_names, outputs),
            "model_version": model.model_version, "versions": _versions(),
            "onnx": onnx_name, "sha256": hashes.pop(onnx_name),
            "external_data": [{"file": name, "sha256": sha}
                              for name, sha in sorted(hashes.items())],
        }
        sidecar_path = out_dir / f"{stage}.json"
        # The old sidecar goes first: until the new one lands, readers see "no export".
        sidecar_path.unlink(missing_ok=True)
        for name in [*hashes, onnx_name]:  # the .onnx last: it names the weight files
            os.replace(staging / name, out_dir / name)
        fsync_directory(out_dir)
        atomic_write_bytes(sidecar_path, (json.dumps(sidecar, indent=2) + "\n").encode())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportedStage(out_dir / onnx_name, sidecar)


def load_exported(out_dir: Path | str, stage: str) -> ExportedStage:
    """The export of `stage` in `out_dir`, its files checked against the sidecar's sha256s."""
    out_dir = Path(out_dir)
    sidecar_path = out_dir / f"{stage}.json"
    try:
        sidecar = json.loads(sidecar_path.read_text())
        files = [(sidecar["onnx"], sidecar["sha256"])]
        files += [(entry["file"], entry["sha256"]) for entry in sidecar["external_data"]]
    except FileNotFoundError:
        raise ExportError(f"no {stage} export in {out_dir} ({sidecar_path.name} missing)") from None
    except (ValueError, KeyError, TypeError) as error:
        raise ExportError(f"unreadable export sidecar {sidecar_path}: {error}") from error
    for name, sha in files:
        path = out_dir / name
        if not path.is_file() or file_sha256(path) != sha:
            raise ExportError(f"{path} is missing or does not match {sidecar_path.name} "
                              "(half-written or replaced): export again")
    return ExportedStage(out_dir / sidecar["onnx"], sidecar)


def ensure_exported(model: Sam3Model, config: ExportConfig, stage: str,
                    out_dir: Path | str) -> ExportedStage:
    """Reuse a verified export made from the same model version, shapes and versions; export
    otherwise. The model is identified by its `model_version` (weights are not hashed)."""
    try:
        exported = load_exported(out_dir, stage)
    except ExportError:
        return export_stage(model, config, stage, out_dir)
    sidecar = exported.sidecar
    expected_config = {"views": config.views, "image_size": config.image_size,
                       "prompts": config.prompts}
    if (sidecar["model_version"] == model.model_version and sidecar["config"] == expected_config
            and sidecar["opset"] == OPSET and sidecar["versions"] == _versions()):
        return exported
    return export_stage(model, config, stage, out_dir)


class OnnxRuntimeStage:
    """An exported stage run by onnxruntime: torch tensors in, torch tensors out on the device
    of the first input. Same call shape as the TensorRT runner (trt_backend.TrtStage)."""

    def __init__(self, exported: ExportedStage,
                 providers: Sequence[str] = ("CPUExecutionProvider",), threads: int | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.exported = exported
        self.label = f"onnxruntime-{providers[0].removesuffix('ExecutionProvider').lower()}"
        self.session = onnxruntime.InferenceSession(str(exported.onnx_path), options,
                                                    providers=list(providers))
        self.input_names = [node.name for node in self.session.get_inputs()]
        self.input_shapes = [tuple(node.shape) for node in self.session.get_inputs()]

    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        feed = {name: tensor.detach().cpu().numpy()
                for name, tensor in zip(self.input_names, inputs)}
        device = inputs[0].device
        return [torch.from_numpy(array).to(device) for array in self.session.run(None, feed)]


def check_parity(model: Sam3Model, exported: ExportedStage, seed: int = 1) -> dict[str, float]:
    """Max abs difference per output between torch and onnxruntime, on seeded example inputs."""
    config = ExportConfig(**exported.sidecar["config"])
    wrapper = build_stage(model, config, exported.stage)
    inputs = wrapper.example_inputs(seed)
    with torch.no_grad(), cpu_redirect():
        expected = wrapper(*inputs)
    actual = OnnxRuntimeStage(exported)(*inputs)
    return {name: float((a.float() - e.float()).abs().max())
            for name, a, e in zip(wrapper.output_names, actual, expected)}


def load_model(checkpoint: str | None, full_random: bool, image_size: int | None,
               seed: int = 0) -> Sam3Model:
    """The model a CLI asked for: a checkpoint, the full-size random one or the small one."""
    from segmentation_node.sam3_backend.builder import build_full_size_sam3_random, build_sam3, build_small_sam3
    from segmentation_node.sam3_backend.input_size import FULL_IMAGE_SIZE

    if checkpoint or full_random:
        if image_size not in (None, FULL_IMAGE_SIZE):
            raise ValueError(f"the full model takes {FULL_IMAGE_SIZE} px only; --image-size is "
                             "for --small")
        return build_sam3(checkpoint) if checkpoint else build_full_size_sam3_random(seed)
    return build_small_sam3(image_size=image_size or SMALL_IMAGE_SIZE, seed=seed)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="workcell_export_onnx", description="Export SAM3 stages to static-shape ONNX "
        "(opset 18) with a JSON sidecar, for TensorRT engine builds.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--small", action="store_true",
                        help="the small random-init model of the real architecture")
    source.add_argument("--checkpoint", help="a local SAM3 checkpoint (sam3.pt)")
    source.add_argument("--full-random", action="store_true",
                        help="the full-size architecture with random weights")
    parser.add_argument("--seed", type=int, default=0, help="weights seed of the random models")
    parser.add_argument("--views", type=int, default=2, help="images per backbone call")
    parser.add_argument("--image-size", type=int,
                        help=f"input resolution (--small only; default {SMALL_IMAGE_SIZE})")
    parser.add_argument("--prompts", type=int, default=4, help="text prompts per detector call")
    parser.add_argument("--stages", default=",".join(STAGE_NAMES),
                        help=f"comma-separated, of: {', '.join(STAGE_NAMES)}")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--check", action="store_true",
                        help="run onnxruntime and print the max abs diff to torch per output")
    args = parser.parse_args(argv)
    try:
        stages = [stage.strip() for stage in args.stages.split(",") if stage.strip()]
        unknown = sorted(set(stages) - set(STAGE_NAMES))
        if unknown or not stages:
            raise ValueError(f"unknown or no stage in --stages '{args.stages}'; stages: "
                             f"{', '.join(STAGE_NAMES)}")
        if args.out.exists() and not args.out.is_dir():
            raise ValueError(f"--out {args.out} exists and is not a folder")
        # Fail before building a model.
        ExportConfig(args.views, args.image_size or SMALL_IMAGE_SIZE, args.prompts)
        model = load_model(args.checkpoint, args.full_random, args.image_size, args.seed)
        config = ExportConfig(args.views, model.image_size, args.prompts)
        for stage in stages:
            exported = export_stage(model, config, stage, args.out)
            print(f"{stage}: {exported.onnx_path} sha256 {exported.sidecar['sha256'][:16]}...")
            if args.check:
                for output, diff in check_parity(model, exported).items():
                    print(f"  {output}: max abs diff {diff:.3g}")
    except (ValueError, FileNotFoundError, ExportError) as error:
        print(f"workcell_export_onnx: error: {error}", file=sys.stderr)
        return 2
    return 0


def _check_image_size(model: Sam3Model, config: ExportConfig) -> None:
    if config.image_size != model.image_size:
        raise ValueError(f"the model was built for {model.image_size} px, the export asks for "
                         f"{config.image_size} (the ViT's RoPE tables fix the resolution)")


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _tensor_specs(names: Sequence[str], tensors: Sequence[torch.Tensor]) -> dict:
    return {name: {"shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch.")}
            for name, tensor in zip(names, tensors)}


def _versions() -> dict[str, str]:
    return {"torch": torch.__version__, "sam3": importlib.metadata.version("sam3"),
            "onnx": importlib.metadata.version("onnx")}


@contextlib.contextmanager
def _no_activation_checkpointing(module: nn.Module) -> Iterator[None]:
    """The full model's segmentation head checkpoints activations even in eval mode (`act_ckpt`;
    sam3's other modules only when training): a training memory saving that changes nothing
    without gradients, but the exporter cannot translate checkpoint regions."""
    switched = [sub for sub in module.modules() if getattr(sub, "act_ckpt", None) is True]
    try:
        for sub in switched:
            sub.act_ckpt = False
        yield
    finally:
        for sub in switched:
            sub.act_ckpt = True


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter warns on benign events (record_function calls it drops, constant folding
    it skips, RoIAlign's adaptive sampling ratio, which ONNX spells 0). The parity check, not
    these logs, is what tells an export is right."""
    names = ("torch._dynamo", "torch._logging", "torch.onnx", "onnxscript")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
