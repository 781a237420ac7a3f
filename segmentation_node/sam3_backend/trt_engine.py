"""Build TensorRT engines from the ONNX exports (onnx_export.py), through the engine cache:
a build happens only when the engine key (ONNX, GPU, TensorRT version, precision and how it
was applied, shapes, builder options) changes, and the log says why.

Precision is put into the ONNX first (onnx_precision.py: fp16 converted, int8 / fp8 Q/DQ nodes
calibrated on recorded frames, each checked against fp32 with onnxruntime), so TensorRT 10 and
11 build from the same file: TensorRT 11 parses it into a strongly typed network (it has no
precision flags); TensorRT 10 gets the deprecated builder flags that let it use those types.
fp8 needs compute capability >= 8.9. `--onnx-only` applies and checks the precision without
TensorRT or a GPU.

tensorrt is imported inside functions: this module loads, and fails clearly, without it.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from segmentation_node.atomic_io import file_sha256
from segmentation_node.sam3_backend.engine_cache import PRECISIONS, EngineCache, EngineKey
from segmentation_node.sam3_backend.onnx_export import (STAGE_NAMES, ExportedStage, ExportError,
                                                        load_exported)
from segmentation_node.sam3_backend.onnx_precision import (QUANTIZED, PrecisionModel, apply_precision,
                                                           stage_precision)
from segmentation_node.sam3_backend.predictor import preprocess_image

log = logging.getLogger(__name__)

DEFAULT_WORKSPACE_MIB = 4096
CALIBRATED_STAGE = "backbone"  # the only stage whose inputs are images
PRECISION_DIR = "precision"  # in the engine cache: the precision-converted ONNX files
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FP8_MIN_CAPABILITY = (8, 9)  # Ada and Hopper


class TensorRtUnavailable(RuntimeError):
    """TensorRT or a CUDA GPU is missing; the message says which, in one line."""


@dataclass(frozen=True)
class GpuIdentity:
    name: str
    compute_capability: str  # "major.minor"


def import_tensorrt():
    try:
        import tensorrt
    except ImportError as error:
        raise TensorRtUnavailable(f"TensorRT is not installed: {error} (install the tensorrt "
                                  "wheel matching the CUDA driver, on a machine with an NVIDIA GPU)"
                                  ) from error
    return tensorrt


def require_cuda_gpu() -> GpuIdentity:
    if not torch.cuda.is_available():
        raise TensorRtUnavailable("no CUDA GPU: torch.cuda.is_available() is False (TensorRT "
                                  "engines run on NVIDIA GPUs only)")
    properties = torch.cuda.get_device_properties(torch.cuda.current_device())
    return GpuIdentity(properties.name, f"{properties.major}.{properties.minor}")


def require_tensorrt_and_gpu():
    """(tensorrt module, GPU identity), or TensorRtUnavailable."""
    return import_tensorrt(), require_cuda_gpu()


def tensorrt_major(version: str) -> int:
    return int(version.split(".")[0])


def strongly_typed(major: int) -> bool:
    """TensorRT 11 builds strongly typed networks only; 10 can, but JetPack's TensorRT 10 plugins
    and tactics are tuned for the flag-driven (weakly typed) path."""
    return major >= 11


def builder_flags(major: int, precision: str) -> tuple[str, ...]:
    """BuilderFlag names a TensorRT 10 build needs to run the ONNX's types (none on 11: removed)."""
    if strongly_typed(major):
        return ()
    return {"fp32": (), "fp16": ("FP16",), "int8": ("FP16", "INT8"), "fp8": ("FP16", "FP8")}[precision]


def calibration_files(folder: Path | str) -> list[Path]:
    """Images of a recording: `folder/images/` (COCO layout) when present, else `folder`."""
    folder = Path(folder)
    images = folder / "images" if (folder / "images").is_dir() else folder
    if not images.is_dir():
        raise ValueError(f"calibration folder not found: {folder}")
    files = sorted(path for path in images.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no {'/'.join(IMAGE_SUFFIXES)} images in {images}")
    return files


def calibration_digest(files: Sequence[Path]) -> str:
    """Identity of a calibration set (names and contents): part of the engine key."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def calibration_batches(files: Sequence[Path], image_size: int, views: int) -> Iterator[np.ndarray]:
    """views x 3 x S x S float32 batches, preprocessed exactly as the predictor does; the last
    batch is filled up by repeating its last image (the engine's batch is fixed)."""
    import cv2

    batch: list[torch.Tensor] = []
    for path in files:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot read calibration image {path}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        batch.append(preprocess_image(rgb, image_size, torch.device("cpu")))
        if len(batch) == views:
            yield torch.stack(batch).numpy()
            batch = []
    if batch:
        yield torch.stack(batch + [batch[-1]] * (views - len(batch))).numpy()


def engine_key(exported: ExportedStage, converted: PrecisionModel, gpu: GpuIdentity, tensorrt_version: str,
               workspace_mib: int, calibration_sha256: str | None) -> EngineKey:
    major = tensorrt_major(tensorrt_version)
    return EngineKey.create(
        stage=exported.stage, onnx_sha256=converted.sha256, gpu_name=gpu.name,
        compute_capability=gpu.compute_capability, tensorrt_version=tensorrt_version,
        precision=converted.precision, input_shapes=exported.input_shapes(),
        builder_options={"workspace_mib": workspace_mib, "calibration_sha256": calibration_sha256,
                         "precision_method": converted.method,
                         "network": "strongly typed" if strongly_typed(major) else
                                    "flags " + ",".join(builder_flags(major, converted.precision))})


def precision_model(exported: ExportedStage, precision: str, work_dir: Path | str,
                    calibration_images: Path | str | None) -> tuple[PrecisionModel, str | None]:
    """(the stage's ONNX in its precision, the calibration set's digest or None)."""
    precision = stage_precision(exported.stage, precision, CALIBRATED_STAGE)
    if precision not in QUANTIZED:
        return apply_precision(exported, precision, work_dir), None
    if calibration_images is None:
        raise ValueError(f"{precision} needs --calibration-images (recorded frames)")
    files = calibration_files(calibration_images)
    views, _, size, _ = exported.input_shapes()["images"]
    feeds = [{"images": batch} for batch in calibration_batches(files, size, views)]
    return apply_precision(exported, precision, work_dir, feeds), calibration_digest(files)


def ensure_engine(cache: EngineCache, exported: ExportedStage, precision: str = "fp16",
                  calibration_images: Path | str | None = None,
                  workspace_mib: int = DEFAULT_WORKSPACE_MIB) -> Path:
    """The stage's engine plan from the cache, built first if its key changed."""
    trt, gpu = require_tensorrt_and_gpu()
    _check_precision_supported(trt, gpu, stage_precision(exported.stage, precision, CALIBRATED_STAGE))
    converted, calibration_sha256 = precision_model(exported, precision, cache.root / PRECISION_DIR,
                                                    calibration_images)
    log.info("%s", converted.report())
    key = engine_key(exported, converted, gpu, trt.__version__, workspace_mib, calibration_sha256)
    log.info("%s", cache.describe(key))
    plan, built = cache.get_or_build(key, lambda: build_plan(converted, workspace_mib))
    log.info("%s engine %s: %s", exported.stage, "built" if built else "cached", plan)
    return plan


def build_plan(converted: PrecisionModel, workspace_mib: int) -> bytes:
    """Parse the ONNX and build a serialized engine (minutes for the full model)."""
    trt = import_tensorrt()
    major = tensorrt_major(trt.__version__)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    if strongly_typed(major):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    else:  # TensorRT 10 networks are always explicit-batch; 8.x needs the flag.
        flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(converted.path)):
        errors = "; ".join(str(parser.get_error(index)) for index in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {converted.path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    for flag in builder_flags(major, converted.precision):
        config.set_flag(getattr(trt.BuilderFlag, flag))
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build the {converted.stage} engine "
                           f"({converted.precision}); its log above says why")
    return bytes(plan)


def build_engines(onnx_dir: Path | str, cache_dir: Path | str, precision: str = "fp16",
                  stages: Sequence[str] = STAGE_NAMES, calibration_images: Path | str | None = None,
                  workspace_mib: int = DEFAULT_WORKSPACE_MIB) -> dict[str, Path]:
    """Engines for the exported stages found in `onnx_dir` (the backbone is required)."""
    cache = EngineCache(cache_dir)
    return {stage: ensure_engine(cache, exported, precision, calibration_images, workspace_mib)
            for stage, exported in _exports(onnx_dir, stages).items()}


def _exports(onnx_dir: Path | str, stages: Sequence[str]) -> dict[str, ExportedStage]:
    exports = {}
    for stage in stages:
        try:
            exports[stage] = load_exported(onnx_dir, stage)
        except ExportError:
            if stage == CALIBRATED_STAGE:
                raise
    return exports


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="workcell_build_engines", description="Build (or reuse from the cache) TensorRT "
        "engines for the SAM3 stages exported by workcell_export_onnx.")
    parser.add_argument("--onnx-dir", required=True, type=Path, help="workcell_export_onnx --out")
    parser.add_argument("--cache", required=True, type=Path, help="engine cache folder")
    parser.add_argument("--precision", default="fp16", choices=PRECISIONS)
    parser.add_argument("--calibration-images", type=Path,
                        help="recorded frames for int8 / fp8: a folder of images or a COCO folder")
    parser.add_argument("--onnx-only", action="store_true",
                        help="only put the precision into the ONNX and check it against fp32 with onnxruntime "
                             "(no TensorRT or GPU needed); prints the differences")
    parser.add_argument("--stages", default=",".join(STAGE_NAMES),
                        help=f"comma-separated, of: {', '.join(STAGE_NAMES)}")
    parser.add_argument("--workspace-mib", type=int, default=DEFAULT_WORKSPACE_MIB)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        stages = [stage.strip() for stage in args.stages.split(",") if stage.strip()]
        if not stages or set(stages) - set(STAGE_NAMES):
            raise ValueError(f"unknown or no stage in --stages '{args.stages}'; stages: "
                             f"{', '.join(STAGE_NAMES)}")
        # Inputs first, so a wrong path is reported on any machine.
        load_exported(args.onnx_dir, CALIBRATED_STAGE)
        if args.precision in QUANTIZED:
            if args.calibration_images is None:
                raise ValueError(f"--precision {args.precision} needs --calibration-images")
            calibration_files(args.calibration_images)
        if args.onnx_only:
            for stage, exported in _exports(args.onnx_dir, stages).items():
                converted, _ = precision_model(exported, args.precision, args.cache / PRECISION_DIR,
                                               args.calibration_images)
                print(f"{converted.report()}\n  -> {converted.path}")
            return 0
        require_tensorrt_and_gpu()
        for stage, plan in build_engines(args.onnx_dir, args.cache, args.precision, stages,
                                         args.calibration_images, args.workspace_mib).items():
            print(f"{stage}: {plan}")
    except (TensorRtUnavailable, ValueError, ExportError) as error:  # PrecisionError too
        print(f"workcell_build_engines: error: {error}", file=sys.stderr)
        return 2
    return 0


def _check_precision_supported(trt, gpu: GpuIdentity, precision: str) -> None:
    if precision != "fp8":
        return
    if not strongly_typed(tensorrt_major(trt.__version__)) and not hasattr(trt.BuilderFlag, "FP8"):
        raise ValueError(f"fp8 needs TensorRT >= 8.6, this is {trt.__version__}")
    capability = tuple(int(part) for part in gpu.compute_capability.split("."))
    if capability < FP8_MIN_CAPABILITY:
        raise ValueError(f"fp8 needs compute capability >= 8.9, {gpu.name} has "
                         f"{gpu.compute_capability}")


if __name__ == "__main__":
    sys.exit(main())
