"""workcell_sizing: the work counted on the real SAM3 architecture, checked against independent
counts, the arithmetic that turns it into rates, and the orin / thor profiles held to the budget
the tool computes for them (full-size architecture with random weights, counted on the CPU)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from segmentation_node.backends import BackendSpec
from segmentation_node.perception.types import CameraFrame, Prompt
from segmentation_node.sam3_backend.builder import build_full_size_sam3_random, build_small_sam3, resize_input
from segmentation_node.sam3_backend.work_count import (WorkCounter, count_model, counting, trunk_flops,
                                                       vit_matmul_flops)
from segmentation_node.sizing import (BACKBONE, HEAD, REFERENCES, STAGES, TEXT, TRACKER_KEYFRAME, TRACKER_STEP,
                                      Device, ModelWork, Reference, StageWork, Target, Workload, calibrate,
                                      full_size_work, load_profile, main, plan, predict, size)

REPO = Path(__file__).resolve().parents[1]
SIZED_PROFILES = ("thor", "orin")
FULL_TRUNK = dict(width=1024, depth=32, window=24, global_blocks=(7, 15, 23, 31))


@pytest.mark.parametrize("image_size", [224, 168])
def test_small_trunk_count_equals_its_matmuls_from_the_dimensions(image_size):
    model = build_small_sam3(image_size=image_size)
    grid = image_size // 14
    assert trunk_flops(model) == vit_matmul_flops(image_size, width=192, depth=4, window=grid // 2,
                                                  global_blocks=(1, 3))


def test_full_size_trunk_count_equals_its_matmuls_at_1008_and_resized_to_924():
    model = build_full_size_sam3_random(device="cpu")
    assert trunk_flops(model) == vit_matmul_flops(1008, **FULL_TRUNK)  # 5.40 TFLOP
    resize_input(model, 924)  # 66 patches: window attention pads to 72
    assert trunk_flops(model) == vit_matmul_flops(924, **FULL_TRUNK)


def test_multi_head_attention_counts_projections_and_attention():
    attention = torch.nn.MultiheadAttention(64, 4).eval()
    tokens, keys = torch.randn(100, 2, 64), torch.randn(30, 2, 64)
    counter = WorkCounter()
    with torch.inference_mode(), counting(counter):
        attention(tokens, keys, keys, need_weights=False)
    projections = 2 * 2 * 64 * 64 * (100 + 30 + 30 + 100)  # q, k, v in; out
    core = 2 * 2 * 2 * 100 * 30 * 64  # batch 2: scores and weighted values
    assert counter.flops == projections + core


def test_work_is_per_unit_plus_per_batch():
    """Counted on batches of one and two units; a batch of three must follow."""
    model = build_small_sam3(image_size=112)
    from segmentation_node.sam3_backend.work_count import count_runs, stage_runs

    work = count_model(model)
    three = count_runs(stage_runs(model, 6, meta_backbone=True, units=3, tracker=False))
    for stage in (BACKBONE, TEXT, HEAD):
        flops, elements = work.stages[stage].batch(3)
        assert flops == pytest.approx(three[stage].flops, rel=1e-9), stage
        assert elements == pytest.approx(three[stage].elements, rel=1e-3), stage
    assert work.stages[BACKBONE].fixed_elements > 0  # the weights, read once per batch


def test_tracker_step_attends_every_kept_memory_frame():
    """The full model picks memory frames by their eff_iou_score: the stream must keep it, or
    only the previous frame is attended whatever the memory holds."""
    model = build_small_sam3(image_size=112, num_maskmem=7)
    model.tracker.use_memory_selection = True  # as the full-size video model is built
    shallow = count_model(model, memory_frames=1).stages[TRACKER_STEP]
    deep = count_model(model, memory_frames=6).stages[TRACKER_STEP]
    assert deep.flops > shallow.flops  # equal when only the previous frame is attended


def test_a_resized_model_serves_frames_at_its_new_size():
    spec = BackendSpec("sam3_small", image_size=168, max_objects=3)
    backend, _ = spec.build(None)
    assert backend.model.image_size == 168 and backend.max_objects == 3
    assert backend.model_version.endswith("@168px")
    image = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    views = [CameraFrame("cam0", 0, image), CameraFrame("cam1", 0, image)]
    prompts = [Prompt("metal part", "part")]
    for keyframe in (True, False, False):
        results = backend.process(views, prompts, keyframe=keyframe)
        assert len(results) == 2
        assert all(d.mask.shape == (90, 120) for view in results for d in view)
    with pytest.raises(ValueError, match="multiple of 14"):
        BackendSpec("sam3_small", image_size=170)


# --- the arithmetic, on made-up work (no model) --------------------------------------------------

DEVICE = Device("test", "test device", {"fp32": 1e12, "fp16": 2e12, "int8": 4e12}, 1e11, "made up")


def made_up_work(image_size: int = 1008) -> ModelWork:
    scale = (image_size / 1008) ** 2
    return ModelWork("made-up", image_size, 6, {
        BACKBONE: StageWork(100e9 * scale, 1e6, 0, 1e9),  # compute bound: 100 ms fp32, 25 ms int8
        TEXT: StageWork(1e9, 1e6),
        HEAD: StageWork(10e9 * scale, 1e6),
        TRACKER_KEYFRAME: StageWork(1e9, 1e6),
        TRACKER_STEP: StageWork(5e9 * scale, 1e6)})


def test_frame_sets_amortize_keyframes_over_the_interval():
    workload = Workload(views=2, prompts=3, objects=4, keyframe_interval=5, precision="fp32", image_size=1008)
    prediction = predict(workload, made_up_work(), DEVICE, efficiency=0.5)
    # per unit at efficiency 0.5: backbone 200 ms (its 1 GB of weights per batch at 100 GB/s is
    # under compute), head 20, tracker keyframe 2, step 10; the text encoder runs per prompt set
    assert prediction.keyframe_stage_ms[BACKBONE] == pytest.approx(400.0)
    assert prediction.keyframe_stage_ms[TEXT] == prediction.tracking_stage_ms[TEXT] == 0.0
    assert prediction.keyframe_ms == pytest.approx(400 + 6 * 20 + 8 * 2)
    assert prediction.tracking_ms == pytest.approx(400 + 8 * 10)
    assert prediction.amortized_ms == pytest.approx((536 + 4 * 480) / 5)
    assert prediction.view_frame_ms == pytest.approx(prediction.amortized_ms / 2)
    assert prediction.max_rate_hz == pytest.approx(1000 / prediction.amortized_ms)
    assert prediction.queue_needed(2.0) == 2  # 536 ms of keyframe: one more frame set arrives
    assert prediction.detection_gap_s(2.0) == pytest.approx(5 / 2.0 + 0.536)
    assert prediction.holds(2.0, worker_queue=2) and not prediction.holds(2.0, worker_queue=1)


def test_calibration_is_the_roofline_over_the_measured_time():
    reference = Reference(50.0, 1008, {BACKBONE: "int8", HEAD: "fp16"}, "made up")
    # roofline: backbone 25 ms (int8) + head 5 ms (fp16)
    assert calibrate(DEVICE, reference, made_up_work()) == pytest.approx(30.0 / 50.0)


def test_the_plan_turns_precision_first_and_only_as_far_as_needed():
    works = {size: made_up_work(size) for size in (1008, 924, 840, 756, 672, 588, 504)}

    def evaluate(workload):
        return predict(workload, works[workload.image_size], DEVICE, 1.0)

    workload = Workload(3, 2, 4, 5, "fp16", 1008)
    target = Target(rate_hz=5.0, worker_queue=2, max_detection_gap_s=3.0)
    assert not evaluate(workload).holds(5.0, 2)
    steps = plan(workload, target, DEVICE, evaluate)
    assert [step.knob for step in steps][0] == "precision"
    assert steps[-1].prediction.max_rate_hz >= 5.0
    before_last = steps[-2].prediction.max_rate_hz if len(steps) > 1 else 0.0
    assert before_last < 5.0  # no knob turned further than needed
    # where tracking frames cost more than keyframes, fewer keyframes would lose rate: the
    # interval goes down instead
    heavy_tracker = {**made_up_work().stages, TRACKER_STEP: StageWork(200e9, 1e6)}
    works[1008] = replace(made_up_work(), stages=heavy_tracker)
    # tracking frame set 25 + 4 x 200 ms, keyframe 39 ms: 1.5 Hz at an interval of 5, 2.3 Hz at 2
    steps = plan(Workload(1, 1, 4, 5, "int8", 1008), Target(2.0, 2, 10.0), DEVICE, evaluate)
    assert [step.change for step in steps] == ["keyframe_interval 5 -> 2"]


# --- the full-size architecture, the profiles and the command line -----------------------------

@pytest.fixture(scope="module")
def count_cache(tmp_path_factory):
    """Counts of the full-size architecture at the profiles' input sizes and the calibration's,
    counted once for this module (~50 s)."""
    cache = tmp_path_factory.mktemp("counts")
    sizes = {load_profile(REPO / "config" / f"{name}.yaml").workload.image_size for name in SIZED_PROFILES}
    for image_size in sizes | {reference.image_size for reference in REFERENCES.values()}:
        full_size_work(image_size, cache_dir=cache, log=lambda line: None)
    return cache


@pytest.mark.parametrize("name", SIZED_PROFILES)
def test_the_profile_holds_its_camera_rate_within_the_budget(name, count_cache):
    profile = load_profile(REPO / "config" / f"{name}.yaml")
    report = size(profile.device, profile.workload, profile.target, count_cache, log=lambda line: None)
    p = report.prediction
    assert report.holds, report.to_markdown()
    assert report.gap_ok, report.to_markdown()
    assert profile.target.stale_ok, f"{name}: stale_after_s under two frame periods"
    print(f"\n{name}: {p.max_rate_hz:.2f} Hz held (profile {profile.target.rate_hz:g} Hz), keyframe "
          f"{p.keyframe_ms:.0f} ms, tracking {p.tracking_ms:.0f} ms, efficiency {report.efficiency:.3f}")


def test_the_command_line_prints_the_table_and_a_json_line(count_cache, capsys):
    assert main(["--profile", "thor", "--count-cache", str(count_cache)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("device: Jetson AGX Thor")
    assert any(line.startswith("| tracker step | object |") for line in out)
    result = json.loads(out[-1])
    assert result["holds"] and result["device"] == "thor"
    assert set(result["keyframe_stage_ms"]) == set(STAGES)
    # a workload the device cannot hold: exit 1 and the knobs to turn, in order
    assert main(["--profile", "thor", "--count-cache", str(count_cache), "--rate", "2.7"]) == 1
    text = capsys.readouterr().out
    assert "does not hold" in text and "turn, in order:" in text
    assert main(["--profile", "orin", "--count-cache", str(count_cache), "--precision", "fp8"]) == 2
    assert "has no fp8" in capsys.readouterr().err


def test_the_table_covers_the_grid_for_both_devices(tmp_path):
    """From a count cache holding made-up work (no counting): one row per grid point, Thor and Orin."""
    from segmentation_node.sizing import DEFAULT_MEMORY_FRAMES, TABLE_GRID, count_cache_key, sizing_table

    for image_size in {*TABLE_GRID["image_size"], *(r.image_size for r in REFERENCES.values())}:
        key = count_cache_key(image_size, DEFAULT_MEMORY_FRAMES)
        (tmp_path / f"{key}.json").write_text(json.dumps(made_up_work(image_size).to_dict()))
    table = sizing_table(Workload(3, 6, 6, 4, "int8", 672), tmp_path, log=pytest.fail).splitlines()
    rows = [line for line in table if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 4 * 2 * 2 * 2
    assert "Thor max Hz" in table[2] and "Orin max Hz" in table[2]
    first = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert first[:4] == ["1008", "1", "1", "fp16"] and all(float(cell) > 0 for cell in first[4:])
