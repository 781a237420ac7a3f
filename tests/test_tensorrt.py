"""TensorRT engines for SAM3. Everywhere: the clear errors without TensorRT or a GPU, the
build CLI's input checks, int8 calibration data. With TensorRT and a CUDA GPU: build, cache
reuse, parity with torch and the backend on engines, for the small model."""
from __future__ import annotations

import importlib.util
import sys
import types

import cv2
import numpy as np
import pytest
import torch

from segmentation_node.perception.types import CameraFrame, Prompt
from segmentation_node.sam3_backend.builder import build_small_sam3
from segmentation_node.sam3_backend.device import cpu_redirect
from segmentation_node.sam3_backend.engine_cache import EngineCache
from segmentation_node.sam3_backend.onnx_export import ExportConfig, export_stage
from segmentation_node.sam3_backend.predictor import preprocess_image
from segmentation_node.sam3_backend.trt_backend import build_trt_backend
from segmentation_node.sam3_backend.onnx_precision import TOLERANCES, PrecisionError, stage_precision
from segmentation_node.sam3_backend.trt_engine import (GpuIdentity, TensorRtUnavailable, builder_flags,
                                                       calibration_batches, calibration_digest, calibration_files,
                                                       engine_key, main, precision_model, strongly_typed)
from segmentation_node.synthetic.render import render_frame_set
from segmentation_node.synthetic.scene import ClipConfig, generate_clip

IMAGE_SIZE = 112
PROMPTS = [Prompt("metal part", "part"), Prompt("bin", "bin")]


def tensorrt_and_gpu_present() -> bool:
    return importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()


@pytest.fixture(scope="module")
def clip():
    return generate_clip(ClipConfig(seed=3, views=2, width=128, height=96, frames=4))


@pytest.fixture(scope="module")
def recorded_frames(clip, tmp_path_factory):
    """A COCO-style folder of recorded frames (images/ + an annotation file)."""
    root = tmp_path_factory.mktemp("recording")
    (root / "images").mkdir()
    (root / "annotations.json").write_text("{}")
    for index in range(len(clip.frames)):
        for view, render in enumerate(render_frame_set(clip, index)):
            cv2.imwrite(str(root / "images" / f"{index:03d}_cam{view}.png"),
                        cv2.cvtColor(render.image, cv2.COLOR_RGB2BGR))
    return root


def frames(clip, index: int) -> list[CameraFrame]:
    return [CameraFrame(f"cam{view}", clip.frames[index].stamp_ns, render.image)
            for view, render in enumerate(render_frame_set(clip, index))]


@pytest.mark.skipif(tensorrt_and_gpu_present(), reason="TensorRT and a CUDA GPU are present")
def test_build_trt_backend_is_a_clear_error_here(tmp_path):
    model = build_small_sam3(image_size=IMAGE_SIZE, seed=0)
    with pytest.raises(RuntimeError, match=r"^(TensorRT is not installed|no CUDA GPU): ") as error:
        build_trt_backend(model, tmp_path / "engines", precision="fp16", views=2)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "engines").exists()  # nothing exported or built before the check


def test_missing_tensorrt_and_missing_gpu_each_have_their_message(tmp_path, monkeypatch):
    model = build_small_sam3(image_size=IMAGE_SIZE, seed=0)
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails as if not installed
    with pytest.raises(TensorRtUnavailable, match="^TensorRT is not installed: "):
        build_trt_backend(model, tmp_path, views=2)
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TensorRtUnavailable, match="^no CUDA GPU: "):
        build_trt_backend(model, tmp_path, views=2)


@pytest.fixture(scope="module")
def small_export(tmp_path_factory):
    model = build_small_sam3(image_size=IMAGE_SIZE, seed=0)
    out = tmp_path_factory.mktemp("onnx")
    export_stage(model, ExportConfig(views=1, image_size=IMAGE_SIZE), "backbone", out)
    return out


def run_cli(capsys, *arguments: str) -> tuple[int, str]:
    code = main(list(arguments))
    return code, capsys.readouterr().err.strip()


def test_build_cli_reports_bad_input_in_one_line(tmp_path, capsys, small_export):
    code, error = run_cli(capsys, "--onnx-dir", str(tmp_path / "nothing"), "--cache", str(tmp_path))
    assert code == 2 and error == (f"workcell_build_engines: error: no backbone export in "
                                   f"{tmp_path / 'nothing'} (backbone.json missing)")
    code, error = run_cli(capsys, "--onnx-dir", str(small_export), "--cache", str(tmp_path),
                          "--precision", "int8")
    assert code == 2 and "int8 needs --calibration-images" in error
    code, error = run_cli(capsys, "--onnx-dir", str(small_export), "--cache", str(tmp_path),
                          "--precision", "int8", "--calibration-images", str(tmp_path))
    assert code == 2 and "no .png/.jpg/.jpeg images in" in error
    code, error = run_cli(capsys, "--onnx-dir", str(small_export), "--cache", str(tmp_path),
                          "--stages", "backbone,tracker")
    assert code == 2 and "unknown or no stage" in error


@pytest.mark.skipif(tensorrt_and_gpu_present(), reason="TensorRT and a CUDA GPU are present")
def test_build_cli_without_tensorrt_exits_2(tmp_path, capsys, small_export):
    code, error = run_cli(capsys, "--onnx-dir", str(small_export), "--cache", str(tmp_path / "c"))
    assert code == 2 and len(error.splitlines()) == 1
    assert error.startswith(("workcell_build_engines: error: TensorRT is not installed: ",
                             "workcell_build_engines: error: no CUDA GPU: "))
    assert not (tmp_path / "c").exists()


def test_calibration_data_is_preprocessed_like_the_predictor(recorded_frames, clip):
    files = calibration_files(recorded_frames)  # COCO layout: reads images/
    assert len(files) == 8 and files == calibration_files(recorded_frames / "images")
    batches = list(calibration_batches(files[:5], IMAGE_SIZE, views=2))
    assert [b.shape for b in batches] == [(2, 3, IMAGE_SIZE, IMAGE_SIZE)] * 3
    assert all(b.dtype == np.float32 for b in batches)
    first = render_frame_set(clip, 0)[0].image  # 000_cam0.png, PNG is lossless
    expected = preprocess_image(first, IMAGE_SIZE, torch.device("cpu")).numpy()
    np.testing.assert_allclose(batches[0][0], expected, atol=1e-6)
    np.testing.assert_array_equal(batches[2][1], batches[2][0])  # last batch filled up
    digest = calibration_digest(files)
    assert digest == calibration_digest(list(files)) != calibration_digest(files[:-1])
    with pytest.raises(ValueError, match="calibration folder not found"):
        calibration_files(recorded_frames / "missing")


def test_quantized_precisions_calibrate_the_backbone_only():
    assert stage_precision("backbone", "int8") == "int8" and stage_precision("backbone", "fp8") == "fp8"
    assert stage_precision("detector", "int8") == "fp16" and stage_precision("detector", "fp8") == "fp16"
    assert stage_precision("detector", "fp32") == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        stage_precision("backbone", "bf16")


@pytest.mark.parametrize("major, precision, flags", [
    (10, "fp32", ()), (10, "fp16", ("FP16",)), (10, "int8", ("FP16", "INT8")), (10, "fp8", ("FP16", "FP8")),
    (11, "fp16", ()), (11, "int8", ()), (11, "fp8", ()),
])
def test_tensorrt_11_builds_strongly_typed_and_10_gets_the_deprecated_flags(major, precision, flags):
    assert strongly_typed(major) is (major >= 11)
    assert builder_flags(major, precision) == flags


# ---- with TensorRT and a CUDA GPU -------------------------------------------------------------

def gpu_model():
    pytest.importorskip("tensorrt", reason="TensorRT is not installed")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    return build_small_sam3(image_size=IMAGE_SIZE, seed=0, device="cuda")


@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-3), ("fp16", 5e-2)])
def test_engine_backbone_matches_torch(tmp_path, clip, precision, tolerance):
    model = gpu_model()
    backend = build_trt_backend(model, tmp_path, precision=precision, views=2, prompts=2,
                                score_threshold=0.0, max_detections=3)
    batch = torch.stack([preprocess_image(frame.image, IMAGE_SIZE, model.device)
                         for frame in frames(clip, 0)])
    with torch.inference_mode(), cpu_redirect():
        expected = model.detector.backbone.forward_image(batch)
        actual = backend.predictor.image_encoder(batch)
    for want, got in zip(expected["backbone_fpn"] + expected["sam2_backbone_out"]["backbone_fpn"],
                         actual["backbone_fpn"] + actual["sam2_backbone_out"]["backbone_fpn"]):
        diff = float((want - got).abs().max())
        print(f"{precision} backbone level {tuple(want.shape)}: max abs diff {diff:.3g}")
        assert diff <= tolerance * float(want.abs().max())
    result = backend.process(frames(clip, 0), PROMPTS, keyframe=True)
    assert len(result) == 2 and all(result)
    assert backend.process(frames(clip, 1), PROMPTS, keyframe=False) is not None
    assert backend.model_version == f"{model.model_version}+tensorrt-{precision}"


def test_second_build_reuses_the_cached_engines(tmp_path):
    model = gpu_model()
    build_trt_backend(model, tmp_path, precision="fp16", views=2, prompts=2)
    cache = EngineCache(tmp_path)
    plans = {stage: cache.entries(stage) for stage in ("backbone", "detector")}
    assert all(len(entries) == 1 for entries in plans.values())
    stamps = {stage: entries[0].plan_path.stat().st_mtime_ns for stage, entries in plans.items()}
    build_trt_backend(model, tmp_path, precision="fp16", views=2, prompts=2)
    assert {stage: cache.entries(stage)[0].plan_path.stat().st_mtime_ns
            for stage in plans} == stamps
    build_trt_backend(model, tmp_path, precision="fp16", views=1)  # new shapes: new engine
    assert len(cache.entries("backbone")) == 2


def test_int8_engine_from_recorded_frames(tmp_path, recorded_frames, clip):
    model = gpu_model()
    backend = build_trt_backend(model, tmp_path, precision="int8", views=2,
                                calibration_images=recorded_frames, score_threshold=0.0)
    [entry] = EngineCache(tmp_path).entries("backbone")
    assert entry.key.precision == "int8" and dict(entry.key.builder_options)["calibration_sha256"]
    assert all(backend.process(frames(clip, 0), PROMPTS, keyframe=True))


# ---- precision in the ONNX (CPU, onnxruntime) ----------------------------------------------------

@pytest.fixture(scope="module")
def stage_exports(tmp_path_factory):
    """Backbone and detector of the small model, 2 views: what the engines are built from."""
    model = build_small_sam3(image_size=IMAGE_SIZE, seed=0)
    out = tmp_path_factory.mktemp("precision_onnx")
    return {stage: export_stage(model, ExportConfig(views=2, image_size=IMAGE_SIZE, prompts=2), stage, out)
            for stage in ("backbone", "detector")}


def _initializer_types(path) -> set[int]:
    import onnx
    return {tensor.data_type for tensor in onnx.load(str(path)).graph.initializer}


def _zero_point_types(path) -> set[int]:
    """Element types of the Q/DQ nodes' zero points: what the quantized tensors are."""
    import onnx
    graph = onnx.load(str(path)).graph
    types = {tensor.name: tensor.data_type for tensor in graph.initializer}
    return {types[node.input[2]] for node in graph.node
            if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2}


@pytest.mark.parametrize("precision, element", [("int8", "INT8"), ("fp8", "FLOAT8E4M3FN")])
def test_quantized_onnx_has_real_qdq_nodes_close_to_fp32(stage_exports, recorded_frames, tmp_path, precision,
                                                         element, capsys):
    import onnx
    converted, digest = precision_model(stage_exports["backbone"], precision, tmp_path, recorded_frames)
    assert digest == calibration_digest(calibration_files(recorded_frames))
    assert _zero_point_types(converted.path) == {getattr(onnx.TensorProto, element)}
    assert max(converted.errors.values()) <= TOLERANCES[precision]
    with capsys.disabled():
        print(f"\n{converted.report()}")
    # The other stages have no image inputs to calibrate on: fp16.
    detector, _ = precision_model(stage_exports["detector"], precision, tmp_path, recorded_frames)
    assert detector.precision == "fp16" and _zero_point_types(detector.path) == set()


def test_fp16_onnx_keeps_float32_io_and_is_close_to_fp32(stage_exports, tmp_path, capsys):
    import onnx
    for stage, exported in stage_exports.items():
        converted, digest = precision_model(exported, "fp16", tmp_path, None)
        assert digest is None and onnx.TensorProto.FLOAT16 in _initializer_types(converted.path)
        model = onnx.load(str(converted.path))
        io_types = {v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}
        assert onnx.TensorProto.FLOAT16 not in io_types, "the runners feed and read float32"
        assert max(converted.errors.values()) <= TOLERANCES["fp16"]
        with capsys.disabled():
            print(f"\n{converted.report()}")


def test_converted_onnx_is_reused_and_keyed_by_export_and_calibration(stage_exports, recorded_frames, tmp_path):
    exported = stage_exports["backbone"]
    first, _ = precision_model(exported, "int8", tmp_path, recorded_frames)
    stamp = first.path.stat().st_mtime_ns
    again, _ = precision_model(exported, "int8", tmp_path, recorded_frames)
    assert again.path == first.path and again.path.stat().st_mtime_ns == stamp and again.sha256 == first.sha256
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for path in calibration_files(recorded_frames)[:4]:
        (fewer / path.name).write_bytes(path.read_bytes())
    other, _ = precision_model(exported, "int8", tmp_path, fewer)
    assert other.path != first.path


def test_a_conversion_too_far_from_fp32_is_refused_with_the_numbers(stage_exports, recorded_frames, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setitem(TOLERANCES, "int8", 1e-9)
    with pytest.raises(PrecisionError, match=r"refused: backbone int8 .*max relative difference to fp32 "):
        precision_model(stage_exports["backbone"], "int8", tmp_path, recorded_frames)
    assert not list((tmp_path / "backbone").glob("int8-*")), "nothing kept of a refused conversion"


def test_engine_key_says_how_precision_was_applied(stage_exports, recorded_frames, tmp_path):
    exported = stage_exports["backbone"]
    gpu = GpuIdentity("NVIDIA Jetson AGX Orin", "8.7")
    fp16, _ = precision_model(exported, "fp16", tmp_path, None)
    int8, digest = precision_model(exported, "int8", tmp_path, recorded_frames)
    keys = {"fp16 trt10": engine_key(exported, fp16, gpu, "10.3.0", 4096, None),
            "int8 trt10": engine_key(exported, int8, gpu, "10.3.0", 4096, digest),
            "int8 trt11": engine_key(exported, int8, gpu, "11.4.0", 4096, digest)}
    assert len({key.digest() for key in keys.values()}) == 3
    options = {name: dict(key.builder_options) for name, key in keys.items()}
    assert options["int8 trt10"]["network"] == "flags FP16,INT8"
    assert options["int8 trt11"]["network"] == "strongly typed"
    assert "Q/DQ" in options["int8 trt10"]["precision_method"]
    assert keys["int8 trt10"].onnx_sha256 == int8.sha256 != exported.model_sha256


def test_onnx_only_cli_applies_and_checks_precision_without_tensorrt(small_export, recorded_frames, tmp_path,
                                                                     capsys):
    assert main(["--onnx-dir", str(small_export), "--cache", str(tmp_path), "--precision", "int8",
                 "--calibration-images", str(recorded_frames), "--onnx-only"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("backbone int8 (int8 Q/DQ") and "max relative difference to fp32" in printed, printed
    assert (tmp_path / "precision" / "backbone").is_dir()
