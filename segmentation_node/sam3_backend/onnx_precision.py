"""Precision put into the ONNX before TensorRT builds it: one path for TensorRT 10 and 11.

TensorRT 11 (what `pip install tensorrt` gives on x86 today) removed the builder's precision
flags and its implicit-quantization calibrators: networks are strongly typed, so an engine runs
in the types its ONNX carries. JetPack's TensorRT 10 still has the flags (deprecated). Here the
precision is applied to the exported ONNX, and both versions build from that file:

- fp32: the export as it is.
- fp16: float tensors and weights converted to float16, inputs and outputs kept float32
  (onnxruntime's float16 converter: what ModelOpt's AutoCast does without its per-node
  accuracy search).
- int8: explicit quantization, Q/DQ nodes on the inputs of Conv / MatMul / Gemm: symmetric
  (zero point 0, as TensorRT needs), per-channel weights, activation scales by entropy
  calibration on recorded frames (onnxruntime.quantization.quantize_static, QDQ format).
- fp8: the same with FLOAT8E4M3FN Q/DQ nodes, per-tensor, distribution calibration: real FP8
  Q/DQ, which is what TensorRT's FP8 kernels need (a bare FP8 flag without them built fp16).

Quantized precisions need image inputs to calibrate: they apply to the backbone (the stage that
takes the images and most of the compute); the other stages are converted to fp16.

Every converted model is checked against the fp32 export with onnxruntime on the calibration
inputs: per output, the largest difference relative to that output's largest magnitude; over
the precision's tolerance the conversion is refused with the numbers. Converted models are kept
next to the engine cache, keyed by the export and the calibration data, and reused.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from segmentation_node.atomic_io import file_sha256, fsync_directory
from segmentation_node.sam3_backend.onnx_export import ExportedStage

QUANTIZED = ("int8", "fp8")
# How each precision gets into the ONNX; part of the engine key.
METHODS = {"fp32": "as exported", "fp16": "float16 weights and tensors, float32 io (onnxruntime converter)",
           "int8": "int8 Q/DQ, symmetric, per-channel weights, entropy calibration (onnxruntime)",
           "fp8": "float8e4m3fn Q/DQ, per-tensor, distribution calibration (onnxruntime)"}
# Largest output difference against the fp32 export, relative to the output's largest magnitude.
TOLERANCES = {"fp32": 0.0, "fp16": 5e-3, "int8": 0.1, "fp8": 0.2}
QUANTIZED_OPS = ["Conv", "MatMul", "Gemm"]


class PrecisionError(ValueError):
    """The precision cannot be applied (no calibration data, too far from fp32); says why."""


@dataclass(frozen=True)
class PrecisionModel:
    path: Path
    stage: str
    precision: str
    method: str
    sha256: str
    errors: dict[str, float]  # per output, relative to fp32 (as measured by onnxruntime)

    def report(self) -> str:
        worst = max(self.errors.values(), default=0.0)
        return (f"{self.stage} {self.precision} ({self.method}): max relative difference to fp32 {worst:.2g} "
                f"(tolerance {TOLERANCES[self.precision]:g}) " +
                ", ".join(f"{name} {error:.2g}" for name, error in self.errors.items()))


def stage_precision(stage: str, precision: str, calibrated_stage: str = "backbone") -> str:
    """The precision a stage gets: quantization calibrates on images, so only their stage."""
    if precision not in METHODS:
        raise ValueError(f"precision must be one of {', '.join(METHODS)}, got '{precision}'")
    return "fp16" if precision in QUANTIZED and stage != calibrated_stage else precision


def apply_precision(exported: ExportedStage, precision: str, work_dir: Path | str,
                    calibration: Sequence[dict[str, np.ndarray]] | None = None) -> PrecisionModel:
    """The stage's ONNX in `precision` (converted once per export and calibration set, then
    reused from `work_dir`); `calibration`: stage inputs from recorded frames (needed for
    int8 / fp8, also the inputs of the check)."""
    if precision not in METHODS:
        raise ValueError(f"precision must be one of {', '.join(METHODS)}, got '{precision}'")
    if precision in QUANTIZED and not calibration:
        raise PrecisionError(f"{precision} needs calibration inputs (recorded frames) for {exported.stage}")
    inputs = list(calibration or [])
    folder = Path(work_dir) / exported.stage / f"{precision}-{_identity(exported, inputs)[:16]}"
    record_path = folder / "precision.json"
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        model_path = folder / "model.onnx"
        if model_path.is_file() and file_sha256(model_path) == record["sha256"]:
            return PrecisionModel(model_path, exported.stage, precision, record["method"], record["sha256"],
                                  record["errors"])
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=_made(folder.parent)))
    try:
        converted = staging / "model.onnx"
        with contextlib.redirect_stdout(io.StringIO()):  # onnxruntime's calibrators print progress
            _convert(exported, precision, converted, inputs)
        errors = compare_outputs(exported.onnx_path, converted, inputs or [_example_inputs(exported)])
        model = PrecisionModel(folder / "model.onnx", exported.stage, precision, METHODS[precision],
                               file_sha256(converted), errors)
        if max(errors.values(), default=0.0) > TOLERANCES[precision]:
            raise PrecisionError(f"refused: {model.report()}")
        (staging / "precision.json").write_text(json.dumps(
            {"method": model.method, "sha256": model.sha256, "errors": errors}, indent=1))
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
        fsync_directory(folder.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model


def compare_outputs(reference: Path, candidate: Path, inputs: Sequence[dict[str, np.ndarray]]) -> dict[str, float]:
    """Per output, the largest |candidate - reference| over `inputs`, relative to the reference
    output's largest magnitude. Graph optimizations off: Q/DQ nodes run as written (fused, the
    CPU provider would need kernels it has only for int8)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    sessions = [onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                for path in (reference, candidate)]
    names = [output.name for output in sessions[0].get_outputs()]
    worst = dict.fromkeys(names, 0.0)
    for feed in inputs:
        expected, actual = (session.run(None, feed) for session in sessions)
        for name, want, got in zip(names, expected, actual):
            scale = float(np.abs(want).max()) or 1.0
            worst[name] = max(worst[name], float(np.abs(got.astype(np.float32) - want).max()) / scale)
    return worst


def _convert(exported: ExportedStage, precision: str, out: Path, inputs: list[dict[str, np.ndarray]]) -> None:
    import onnx

    if precision == "fp32":
        onnx.save(onnx.load(str(exported.onnx_path)), str(out))
    elif precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        onnx.save(convert_float_to_float16(onnx.load(str(exported.onnx_path)), keep_io_types=True), str(out))
    else:
        from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
        from onnxruntime.quantization import quantize_static

        class Frames(CalibrationDataReader):
            def __init__(self):
                self._feeds = iter(inputs)

            def get_next(self):
                return next(self._feeds, None)

        int8 = precision == "int8"
        quantize_static(str(exported.onnx_path), str(out), Frames(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8 if int8 else QuantType.QFLOAT8E4M3FN,
                        weight_type=QuantType.QInt8 if int8 else QuantType.QFLOAT8E4M3FN,
                        per_channel=int8, op_types_to_quantize=QUANTIZED_OPS,
                        calibrate_method=CalibrationMethod.Entropy if int8 else CalibrationMethod.Distribution,
                        # Float biases: TensorRT fuses them itself and has no int32 bias Q/DQ.
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False})


def _identity(exported: ExportedStage, inputs: list[dict[str, np.ndarray]]) -> str:
    digest = hashlib.sha256(exported.model_sha256.encode())
    for feed in inputs:
        for name in sorted(feed):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(feed[name]).tobytes())
    return digest.hexdigest()


def _example_inputs(exported: ExportedStage) -> dict[str, np.ndarray]:
    """Seeded inputs of the export's shapes, for the check of a precision that needs no frames."""
    rng = np.random.default_rng(0)
    feed = {}
    for name, spec in exported.sidecar["inputs"].items():
        if spec["dtype"].startswith("float"):
            feed[name] = rng.standard_normal(spec["shape"]).astype(np.float32)
        else:  # token ids, masks: zeros are valid
            feed[name] = np.zeros(spec["shape"], np.dtype(spec["dtype"]))
    return feed


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder
