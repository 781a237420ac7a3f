"""ONNX export of SAM3's stages on the small random-init model (112 px, 2 views, 2 prompts):
onnxruntime parity with torch, sidecar contents, torn-export detection, the CLI, and the
engine-backed backend path (Sam3TrtBackend's adapters) driven by onnxruntime runners.

Measured here (2-core CPU): max abs diff torch vs onnxruntime ~2e-6 on backbone features,
~5e-6 on mask logits, <1e-6 on logits and boxes; PARITY_TOLERANCE leaves 20x headroom."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from segmentation_node.perception.types import CameraFrame, Prompt
from segmentation_node.sam3_backend.backend import Sam3Backend
from segmentation_node.sam3_backend.builder import build_small_sam3
from segmentation_node.sam3_backend.device import cpu_redirect
from segmentation_node.atomic_io import file_sha256
from segmentation_node.sam3_backend.onnx_export import (OPSET, BackboneStage, ExportConfig,
                                                        ExportError, OnnxRuntimeStage,
                                                        check_parity, ensure_exported,
                                                        export_stage, load_exported, main)
from segmentation_node.sam3_backend.trt_backend import Sam3TrtBackend
from segmentation_node.synthetic.render import render_frame_set
from segmentation_node.synthetic.scene import ClipConfig, generate_clip

IMAGE_SIZE = 112
CONFIG = ExportConfig(views=2, image_size=IMAGE_SIZE, prompts=2)
PARITY_TOLERANCE = 1e-4
PROMPTS = [Prompt("metal part", "part"), Prompt("bin", "bin"), Prompt("gripper", "gripper")]


@pytest.fixture(scope="module")
def model():
    model = build_small_sam3(image_size=IMAGE_SIZE, seed=0)
    # Random tracker weights call most objects absent: keep them, so propagation is compared.
    head = model.tracker.sam_mask_decoder.pred_obj_score_head
    last = [m for m in head.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.bias.fill_(20.0)
    return model


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    return {stage: export_stage(model, CONFIG, stage, out) for stage in ("backbone", "detector")}


def test_backbone_matches_torch_in_onnxruntime(model, exported):
    diffs = check_parity(model, exported["backbone"])
    assert set(diffs) == {f"{neck}_{level}" for neck in ("fpn", "sam2_fpn") for level in range(3)}
    assert max(diffs.values()) <= PARITY_TOLERANCE, diffs


def test_detector_matches_torch_in_onnxruntime(model, exported):
    diffs = check_parity(model, exported["detector"])
    assert set(diffs) == {"pred_logits", "pred_boxes", "pred_masks", "presence_logit_dec"}
    assert max(diffs.values()) <= PARITY_TOLERANCE, diffs


def test_backbone_outputs_rebuild_the_torch_backbone_dict(model, exported):
    stage = BackboneStage(model, CONFIG)
    images = stage.example_inputs(seed=3)
    with torch.inference_mode(), cpu_redirect():
        expected = model.detector.backbone.forward_image(*images)
    actual = stage.assemble(OnnxRuntimeStage(exported["backbone"])(*images))

    def flat(out: dict) -> list[torch.Tensor]:
        return [out["vision_features"], *out["vision_pos_enc"], *out["backbone_fpn"]]

    assert expected.keys() == actual.keys()
    for want, got in zip(flat(expected) + flat(expected["sam2_backbone_out"]),
                         flat(actual) + flat(actual["sam2_backbone_out"]), strict=True):
        assert want.shape == got.shape
        torch.testing.assert_close(got, want, atol=PARITY_TOLERANCE, rtol=0)


def test_sidecar_describes_the_export(model, exported):
    backbone, detector = exported["backbone"], exported["detector"]
    sidecar = json.loads(backbone.onnx_path.with_suffix(".json").read_text())
    assert sidecar == backbone.sidecar
    assert sidecar["opset"] == OPSET == 18 and sidecar["stage"] == "backbone"
    assert sidecar["config"] == {"views": 2, "image_size": IMAGE_SIZE, "prompts": 2}
    assert sidecar["inputs"] == {"images": {"shape": [2, 3, IMAGE_SIZE, IMAGE_SIZE],
                                            "dtype": "float32"}}
    assert sidecar["outputs"]["fpn_0"]["shape"] == [2, 256, 32, 32]
    assert sidecar["outputs"]["sam2_fpn_2"]["shape"] == [2, 256, 8, 8]
    assert sidecar["model_version"] == model.model_version
    assert sidecar["versions"]["torch"] == torch.__version__ and sidecar["versions"]["sam3"]
    assert sidecar["sha256"] == file_sha256(backbone.onnx_path) == backbone.model_sha256
    assert sidecar["external_data"] == []
    assert detector.input_shapes() == {"fpn_0": [2, 256, 32, 32], "fpn_1": [2, 256, 16, 16],
                                       "fpn_2": [2, 256, 8, 8], "language_features": [32, 2, 256],
                                       "language_mask": [2, 32]}
    assert detector.sidecar["inputs"]["language_mask"]["dtype"] == "bool"
    assert detector.sidecar["outputs"]["pred_masks"]["shape"][0] == 2 * 2  # views x prompts
    leftovers = [p.name for p in backbone.onnx_path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_torn_or_missing_export_is_detected(model, tmp_path):
    exported = export_stage(model, CONFIG, "backbone", tmp_path, external_data=True)
    [weights] = exported.sidecar["external_data"]
    assert (tmp_path / weights["file"]).stat().st_size > 1_000_000  # the weights moved out
    assert exported.model_sha256 != exported.sidecar["sha256"]  # and count in the identity
    diffs = check_parity(model, load_exported(tmp_path, "backbone"))
    assert max(diffs.values()) <= PARITY_TOLERANCE
    with (tmp_path / weights["file"]).open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(ExportError, match="does not match backbone.json"):
        load_exported(tmp_path, "backbone")
    with pytest.raises(ExportError, match="no detector export"):
        load_exported(tmp_path, "detector")
    (tmp_path / "backbone.json").write_text("{")
    with pytest.raises(ExportError, match="unreadable"):
        load_exported(tmp_path, "backbone")


def test_ensure_exported_reuses_a_matching_export_only(model, exported):
    out = exported["backbone"].onnx_path.parent
    before = (out / "backbone.onnx").stat().st_mtime_ns
    reused = ensure_exported(model, CONFIG, "backbone", out)
    assert reused.sidecar == exported["backbone"].sidecar
    assert (out / "backbone.onnx").stat().st_mtime_ns == before
    other = ensure_exported(model, ExportConfig(1, IMAGE_SIZE, 2), "backbone", out / "one-view")
    assert other.input_shapes() == {"images": [1, 3, IMAGE_SIZE, IMAGE_SIZE]}
    with pytest.raises(ValueError, match="built for 112 px"):
        export_stage(model, ExportConfig(2, 224, 2), "backbone", out / "wrong-size")


def frames(clip, index: int) -> list[CameraFrame]:
    return [CameraFrame(f"cam{view}", clip.frames[index].stamp_ns, render.image)
            for view, render in enumerate(render_frame_set(clip, index))]


@pytest.fixture(scope="module")
def runners(exported):
    return OnnxRuntimeStage(exported["backbone"]), OnnxRuntimeStage(exported["detector"])


@pytest.mark.parametrize("views, prompts", [(2, 2), (3, 1), (1, 3)],
                         ids=["engine shapes", "chunked views, padded prompt", "torch fallback"])
def test_engine_backed_backend_matches_torch(model, runners, views, prompts):
    """Sam3TrtBackend's adapters (chunking, padding, query mapping, dict assembly) with
    onnxruntime runners give the torch backend's detections and tracks."""
    clip = generate_clip(ClipConfig(seed=5, views=3, width=128, height=96, frames=2))
    options = dict(score_threshold=0.0, max_detections=2)
    reference = Sam3Backend(model, **options)
    engine = Sam3TrtBackend(model, *runners, **options)
    assert engine.name == "sam3_trt"
    assert engine.model_version == f"{model.model_version}+onnxruntime-cpu"
    for index, keyframe in enumerate([True, False]):
        views_now = frames(clip, index)[:views]
        want = reference.process(views_now, PROMPTS[:prompts], keyframe)
        got = engine.process(views_now, PROMPTS[:prompts], keyframe)
        assert len(got) == len(want) == views
        for want_view, got_view in zip(want, got):
            assert [(d.track_id, d.label) for d in got_view] == [(d.track_id, d.label)
                                                                 for d in want_view]
            assert want_view  # something to compare
            for w, g in zip(want_view, got_view):
                assert abs(w.score - g.score) <= 1e-4
                assert np.logical_xor(w.mask.to_array(), g.mask.to_array()).mean() <= 0.001  # boundary pixels at most


def test_cli_exports_and_checks(tmp_path, capsys):
    code = main(["--small", "--image-size", str(IMAGE_SIZE), "--views", "1", "--stages", "backbone",
                 "--out", str(tmp_path), "--check"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert (tmp_path / "backbone.onnx").is_file() and (tmp_path / "backbone.json").is_file()
    assert not (tmp_path / "detector.onnx").exists()
    diffs = [float(line.split()[-1]) for line in out.splitlines() if "max abs diff" in line]
    assert len(diffs) == 6 and max(diffs) <= PARITY_TOLERANCE


@pytest.mark.parametrize("arguments, message", [
    (["--small", "--image-size", "100"], "multiple of 14"),
    (["--small", "--views", "0"], "views and prompts must be >= 1"),
    (["--small", "--stages", "backbone,tracker"], "unknown or no stage"),
    (["--checkpoint", "/nonexistent/sam3.pt"], "checkpoint not found"),
    (["--checkpoint", "/nonexistent/sam3.pt", "--image-size", "224"], "1008 px only"),
])
def test_cli_bad_input_is_one_clear_line(tmp_path, capsys, arguments, message):
    assert main([*arguments, "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith("workcell_export_onnx: error: ")
    assert message in error
    assert not (tmp_path / "out").exists()


def test_cli_out_must_be_a_folder(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["--small", "--out", str(tmp_path / "file")]) == 2
    assert "not a folder" in capsys.readouterr().err
