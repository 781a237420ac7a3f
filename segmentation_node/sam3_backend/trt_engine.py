"""Build TensorRT engines from the ONNX exports (onnx_export.py), through the engine cache:
a build happens only when the engine key (ONNX, GPU, TensorRT version, precision, shapes,
builder options) changes, and the log says why.

Precisions: fp16 (default; fp32 where TensorRT finds it faster or needs it), fp32, int8 (entropy
calibration on recorded frames: a folder of images or a COCO folder with images/; only the
backbone takes images, so other stages build in fp16), fp8 (TensorRT >= 8.6 and compute
capability >= 8.9; FP8 kernels run only where the ONNX carries Q/DQ nodes, e.g. from NVIDIA
ModelOpt: a plain export builds as fp16).

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
from segmentation_node.sam3_backend.predictor import preprocess_image

log = logging.getLogger(__name__)

DEFAULT_WORKSPACE_MIB = 4096
CALIBRATED_STAGE = "backbone"  # the only stage whose inputs are images
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


def stage_precision(stage: str, precision: str) -> str:
    """The precision a stage is built in: int8 calibration needs image inputs."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    return "fp16" if precision == "int8" and stage != CALIBRATED_STAGE else precision


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


def engine_key(exported: ExportedStage, precision: str, gpu: GpuIdentity, tensorrt_version: str,
               workspace_mib: int, calibration_sha256: str | None) -> EngineKey:
    return EngineKey.create(
        stage=exported.stage, onnx_sha256=exported.model_sha256, gpu_name=gpu.name,
        compute_capability=gpu.compute_capability, tensorrt_version=tensorrt_version,
        precision=precision, input_shapes=exported.input_shapes(),
        builder_options={"workspace_mib": workspace_mib, "calibration_sha256": calibration_sha256})


def ensure_engine(cache: EngineCache, exported: ExportedStage, precision: str = "fp16",
                  calibration_images: Path | str | None = None,
                  workspace_mib: int = DEFAULT_WORKSPACE_MIB) -> Path:
    """The stage's engine plan from the cache, built first if its key changed."""
    trt, gpu = require_tensorrt_and_gpu()
    precision = stage_precision(exported.stage, precision)
    _check_precision_supported(trt, gpu, precision)
    files = None
    if precision == "int8":
        if calibration_images is None:
            raise ValueError("int8 needs --calibration-images (recorded frames)")
        files = calibration_files(calibration_images)
    key = engine_key(exported, precision, gpu, trt.__version__, workspace_mib,
                     calibration_digest(files) if files else None)
    log.info("%s", cache.describe(key))
    plan, built = cache.get_or_build(
        key, lambda: build_plan(exported, precision, workspace_mib, files))
    log.info("%s engine %s: %s", exported.stage, "built" if built else "cached", plan)
    return plan


def build_plan(exported: ExportedStage, precision: str, workspace_mib: int,
               calibration: Sequence[Path] | None = None) -> bytes:
    """Parse the ONNX and build a serialized engine (minutes for the full model)."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 10 networks are always explicit-batch; 8.x needs the flag.
    flags = 0 if int(trt.__version__.split(".")[0]) >= 10 else (
        1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(exported.onnx_path)):
        errors = "; ".join(str(parser.get_error(index)) for index in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {exported.onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if precision != "fp32":
        config.set_flag(trt.BuilderFlag.FP16)  # fp16 kernels, also where int8/fp8 do not apply
    if precision == "fp8":
        config.set_flag(trt.BuilderFlag.FP8)
    if precision == "int8":
        views, _, size, _ = exported.input_shapes()["images"]
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _entropy_calibrator(
            trt, calibration_batches(calibration, size, views), views)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build the {exported.stage} engine "
                           f"({precision}); its log above says why")
    return bytes(plan)


def build_engines(onnx_dir: Path | str, cache_dir: Path | str, precision: str = "fp16",
                  stages: Sequence[str] = STAGE_NAMES, calibration_images: Path | str | None = None,
                  workspace_mib: int = DEFAULT_WORKSPACE_MIB) -> dict[str, Path]:
    """Engines for the exported stages found in `onnx_dir` (the backbone is required)."""
    exports = {}
    for stage in stages:
        try:
            exports[stage] = load_exported(onnx_dir, stage)
        except ExportError:
            if stage == CALIBRATED_STAGE:
                raise
    cache = EngineCache(cache_dir)
    return {stage: ensure_engine(cache, exported, precision, calibration_images, workspace_mib)
            for stage, exported in exports.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="workcell_build_engines", description="Build (or reuse from the cache) TensorRT "
        "engines for the SAM3 stages exported by workcell_export_onnx.")
    parser.add_argument("--onnx-dir", required=True, type=Path, help="workcell_export_onnx --out")
    parser.add_argument("--cache", required=True, type=Path, help="engine cache folder")
    parser.add_argument("--precision", default="fp16", choices=PRECISIONS)
    parser.add_argument("--calibration-images", type=Path,
                        help="recorded frames for int8: a folder of images or a COCO folder")
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
        if args.precision == "int8":
            if args.calibration_images is None:
                raise ValueError("--precision int8 needs --calibration-images")
            calibration_files(args.calibration_images)
        require_tensorrt_and_gpu()
        for stage, plan in build_engines(args.onnx_dir, args.cache, args.precision, stages,
                                         args.calibration_images, args.workspace_mib).items():
            print(f"{stage}: {plan}")
    except (TensorRtUnavailable, ValueError, ExportError) as error:
        print(f"workcell_build_engines: error: {error}", file=sys.stderr)
        return 2
    return 0


def _check_precision_supported(trt, gpu: GpuIdentity, precision: str) -> None:
    if precision != "fp8":
        return
    if not hasattr(trt.BuilderFlag, "FP8"):
        raise ValueError(f"fp8 needs TensorRT >= 8.6, this is {trt.__version__}")
    capability = tuple(int(part) for part in gpu.compute_capability.split("."))
    if capability < FP8_MIN_CAPABILITY:
        raise ValueError(f"fp8 needs compute capability >= 8.9, {gpu.name} has "
                         f"{gpu.compute_capability}")


def _entropy_calibrator(trt, batches: Iterator[np.ndarray], batch_size: int):
    """An IInt8EntropyCalibrator2 over the batches (defined here: its base class is
    tensorrt's). Every int8 build calibrates afresh: builds only happen when the key changes."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._device_batch: torch.Tensor | None = None  # alive while TensorRT reads it

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(batches, None)
            if batch is None:
                return None
            self._device_batch = torch.from_numpy(batch).cuda()
            return [int(self._device_batch.data_ptr())]

        def read_calibration_cache(self) -> None:
            return None

        def write_calibration_cache(self, cache: bytes) -> None:
            pass

    return EntropyCalibrator()


if __name__ == "__main__":
    sys.exit(main())
