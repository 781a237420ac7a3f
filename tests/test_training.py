"""Fine-tuning on tiny synthetic data with the small model at 112 px (CPU): the audit rule,
leak-free held-out splits, augmentation, the prompt mix, early stopping, both training stages
(what trains changes, what is frozen stays bit-identical) and the CLI end to end.

Random weights: these tests check mechanics and contracts, not accuracy."""
from __future__ import annotations

import json
import math
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from segmentation_node.perception.ontology import load_ontology
from segmentation_node.sam3_backend.builder import build_small_sam3
from segmentation_node.sam3_backend.checkpoint import load_checkpoint
from segmentation_node.sam3_backend.stream import TrackerStream
from segmentation_node.synthetic.export import CocoWriter
from segmentation_node.synthetic.render import render_frame_set
from segmentation_node.synthetic.scene import ClipConfig, generate_clip
from segmentation_node.training import cli
from segmentation_node.training.augment import AugmentConfig, Geometry, augment
from segmentation_node.training.data import (AnnotatedObject, DataError, Frame, Instance,
                                             frame_units, load_training_data, split_frames,
                                             track_clips)
from segmentation_node.training.loop import EarlyStopping, run_stage
from segmentation_node.training.prompts import (GEOMETRY_ONLY_TEXT, PromptMix, held_out_queries,
                                                tracker_prompt, training_queries)
from segmentation_node.training.stage1 import DetectorTrainer
from segmentation_node.training.stage2 import TrackerTrainer, frame_features, tracker_levels
from tests.small_disk import small_disk

IMAGE_SIZE = 112
FRAMES = 6
# Fewer queries per image than the default mix: the same kinds, faster steps.
SMALL_MIX = PromptMix(negatives_per_image=1, exemplar_rate=0.5, ambiguous_rate=0.5)


def write_run(directory: Path, seed: int, frames: int = FRAMES) -> Path:
    clip = generate_clip(ClipConfig(seed=seed, views=2, width=128, height=96, frames=frames))
    writer = CocoWriter(directory, clip)
    for frame in clip.frames:
        for view in render_frame_set(clip, frame.index):
            writer.add(frame.index, view)
    writer.close()
    return directory


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    """Two recordings (runs) of the synthetic cell, 2 cameras each, plain ground truth."""
    root = tmp_path_factory.mktemp("data")
    return [write_run(root / "run_a", seed=1), write_run(root / "run_b", seed=2)]


@pytest.fixture(scope="module")
def ontology():
    return load_ontology()


@pytest.fixture(scope="module")
def split(runs, ontology):
    data = load_training_data(runs, allow_unaudited=True, labels=ontology.classes)
    return split_frames(data.frames, "run", seed=0)


def _snapshot(module: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters() if name.startswith(prefix)}


def _identical(before: dict, module: torch.nn.Module) -> bool:
    now = dict(module.named_parameters())
    return all(torch.equal(value, now[name]) for name, value in before.items())


def _changed(before: dict, module: torch.nn.Module) -> set[str]:
    now = dict(module.named_parameters())
    return {name for name, value in before.items() if not torch.equal(value, now[name])}


# --- data: audit rule and splits -----------------------------------------------------------

def test_audit_rule(runs, tmp_path):
    flywheel = tmp_path / "flywheel"
    verdicts = {"accepted": "accepted", "rejected": "rejected", "pending": "pending",
                "garbled": None, "plain": None}
    for name, verdict in verdicts.items():
        shutil.copytree(runs[0], flywheel / name)
        if verdict:
            (flywheel / name / "audit.json").write_text(json.dumps({"verdict": verdict, "by": "qa"}))
    (flywheel / "garbled" / "audit.json").write_text("{not json")

    audited = load_training_data([flywheel], allow_unaudited=False)
    assert [Path(s).name for s in audited.shards] == ["accepted"]
    reasons = {Path(s.path).name: s.reason for s in audited.skipped}
    assert set(reasons) == {"rejected", "pending", "garbled", "plain"}
    assert "'rejected'" in reasons["rejected"] and "'pending'" in reasons["pending"]
    assert "unreadable" in reasons["garbled"]
    assert "--allow-unaudited" in reasons["plain"]
    assert {f.shard for f in audited.frames} == {str(flywheel / "accepted")}

    with_flag = load_training_data([flywheel], allow_unaudited=True)
    assert sorted(Path(s).name for s in with_flag.shards) == ["accepted", "plain"]
    # The flag admits data without an audit, never data an audit refused.
    assert {Path(s.path).name for s in with_flag.skipped} == {"rejected", "pending", "garbled"}


def test_load_keeps_the_coco_fields(runs, ontology):
    data = load_training_data(runs, allow_unaudited=True, labels=ontology.classes)
    assert len(data.frames) == 2 * 2 * FRAMES and not data.skipped
    frame = data.frames[0]
    assert frame.run == "run_a" and frame.camera and frame.exhaustive
    masks = frame.masks()
    assert masks.shape == (len(frame.instances), 96, 128) and masks.any(axis=(1, 2)).all()
    assert frame.image().shape == (96, 128, 3)
    assert any("defective" in i.attributes for f in data.frames for i in f.instances)
    only_parts = load_training_data(runs[:1], allow_unaudited=True, labels={"part_a", "part_b"})
    assert only_parts.unknown_labels and "bin" in only_parts.unknown_labels


@pytest.mark.parametrize("by", ["run", "camera"])
def test_split_has_no_leakage(runs, ontology, by):
    frames = load_training_data(runs, allow_unaudited=True, labels=ontology.classes).frames
    split = split_frames(frames, by, held_out_fraction=0.3, seed=4)
    train_units = set().union(*(frame_units(f, by) for f in split.train))
    held_units = set().union(*(frame_units(f, by) for f in split.held_out))
    assert split.train and split.held_out
    assert not train_units & held_units
    assert set(split.held_out_units) == held_units and set(split.train_units) == train_units
    assert len(split.train) + len(split.held_out) == len(frames)
    again = split_frames(frames, by, held_out_fraction=0.3, seed=4)
    assert [id(f) for f in again.held_out] == [id(f) for f in split.held_out]


def test_split_by_time_and_sku(runs, ontology):
    frames = load_training_data(runs, allow_unaudited=True, labels=ontology.classes).frames
    split = split_frames(frames, "time", held_out_fraction=0.3)
    assert max(f.stamp_ns for f in split.train) < min(f.stamp_ns for f in split.held_out)

    def frame(index: int, labels: list[str]) -> Frame:
        instances = tuple(Instance(t, label, (), {}, "ground_truth") for t, label in enumerate(labels))
        return Frame("shard", Path("x.png"), 8, 8, "run", "cam", index, index, instances, True)

    frames = [frame(0, ["part_a", "bin"]), frame(1, ["part_b"]), frame(2, ["part_a"]), frame(3, ["bin"])]
    split = split_frames(frames, "sku", held_out_fraction=0.25, seed=0, sku_labels=ontology.pickable)
    held = set(split.held_out_units)
    assert held and not any(frame_units(f, "sku", ontology.pickable) & held for f in split.train)
    assert all(frame_units(f, "sku", ontology.pickable) & held for f in split.held_out)
    # Every synthetic frame shows both part kinds: holding one out leaves nothing to train on.
    with pytest.raises(DataError, match="no training frames"):
        split_frames(load_training_data(runs, True, ontology.classes).frames, "sku",
                     sku_labels=ontology.pickable)
    with pytest.raises(DataError, match="at least 2 runs"):
        split_frames(frames, "run")


def test_track_clips_are_consecutive_frames_of_one_stream(split):
    clips = track_clips(split.train, length=3)
    assert clips
    for clip in clips:
        assert len({(f.run, f.camera) for f in clip.frames}) == 1
        assert [f.frame_index for f in clip.frames] == list(range(clip.frames[0].frame_index,
                                                                 clip.frames[0].frame_index + 3))
        assert set(clip.track_ids) == {i.track_id for i in clip.frames[0].instances}


# --- augmentation and prompts --------------------------------------------------------------

def _marked_scene() -> tuple[np.ndarray, np.ndarray]:
    """A grey image with a red square; the mask is exactly the square."""
    image = np.full((60, 80, 3), 100, np.uint8)
    masks = np.zeros((1, 60, 80), bool)
    masks[0, 10:30, 5:25] = True
    image[masks[0]] = (255, 0, 0)
    return image, masks


@pytest.mark.parametrize("geometry", [Geometry(True, 0, 0), Geometry(False, 7, -4),
                                      Geometry(True, -9, 5)])
def test_masks_move_with_the_image(geometry):
    image, masks = _marked_scene()
    out_image, out_masks = augment(image, masks, np.random.default_rng(0), AugmentConfig.none(),
                                   geometry)
    red = (out_image[..., 0] == 255) & (out_image[..., 1] == 0)
    np.testing.assert_array_equal(out_masks[0], red)
    assert red.sum() == masks.sum()  # the square stays inside the image for these shifts


def test_augmentation_is_deterministic_and_occluders_cut_masks():
    image, masks = _marked_scene()
    config = AugmentConfig(flip_probability=0.5, occluder_probability=1.0, max_occluder_size=0.6,
                           highlight_probability=1.0, blur_probability=1.0)
    first = augment(image, masks, np.random.default_rng(5), config)
    second = augment(image, masks, np.random.default_rng(5), config)
    other = augment(image, masks, np.random.default_rng(6), config)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[0], other[0])
    # Occluders only remove pixels: no augmented mask is larger than the moved original.
    for seed in range(10):
        rng = np.random.default_rng(seed)
        geometry = Geometry(bool(seed % 2), seed - 5, 5 - seed)
        _, cut = augment(image, masks, rng, config, geometry)
        assert not (cut & ~geometry.masks(masks)).any()


def _objects() -> list[AnnotatedObject]:
    def square(x: int, y: int) -> np.ndarray:
        mask = np.zeros((48, 64), bool)
        mask[y:y + 8, x:x + 8] = True
        return mask

    return [AnnotatedObject(1, "part_a", ("defective",), square(2, 2)),
            AnnotatedObject(2, "part_a", (), square(20, 2)),
            AnnotatedObject(3, "hand", (), square(40, 30))]


def test_prompt_mix_covers_every_kind(ontology):
    objects = _objects()
    rng = np.random.default_rng(0)
    mix = PromptMix(synonym_rate=0.5, exemplar_rate=1.0, ambiguous_rate=1.0)
    queries = [q for _ in range(30) for q in training_queries(objects, ontology, True, rng, mix, 64, 48)]
    kinds = {q.kind for q in queries}
    assert kinds == {"class", "synonym", "attribute", "exemplar", "noisy_exemplar", "negative",
                     "ambiguous"}
    part_a = {ontology.attributes["defective"].prompt_template.format(p)
              for p in ontology.classes["part_a"].prompts}
    for query in queries:
        if query.kind == "attribute":
            assert query.text in part_a and query.targets == (0,)
        if query.kind in ("negative", "ambiguous"):
            assert query.targets == ()
        if query.kind == "negative":
            assert not any(query.text in ontology.classes[o.label].prompts for o in objects)
        if query.kind.endswith("exemplar"):
            assert query.text == GEOMETRY_ONLY_TEXT and query.exemplar_box is not None
            assert query.targets in ((0, 1), (2,))
    # Without exhaustive labels an absent class is not known to be absent: no negatives.
    unlabelled = training_queries(objects, ontology, False, rng, mix, 64, 48)
    assert not {q.kind for q in unlabelled} & {"negative", "ambiguous"}
    fixed = held_out_queries(objects, ontology, True)
    assert fixed == held_out_queries(objects, ontology, True)
    assert {q.kind for q in fixed} == {"class", "attribute", "negative"}


def test_tracker_prompts_come_from_the_masks():
    masks = np.stack([o.mask for o in _objects()])
    seen = set()
    for seed in range(20):
        prompt = tracker_prompt(masks, np.random.default_rng(seed), PromptMix())
        if prompt.use_masks:
            seen.add("mask")
            continue
        assert prompt.points.shape[:2] == prompt.labels.shape and prompt.points.shape[0] == 3
        if (prompt.labels == 1).all():
            seen.add("clicks")
            for mask, points in zip(masks, prompt.points):
                assert mask[points[:, 1].astype(int), points[:, 0].astype(int)].all()
        else:
            seen.add("box")
            assert (prompt.labels == [2, 3]).all()
    assert seen == {"mask", "clicks", "box"}


# --- early stopping and the stage loop -----------------------------------------------------

def test_early_stopping_waits_patience_evaluations():
    stopper = EarlyStopping(patience=2)
    assert stopper.update(0, 5.0) and stopper.update(1, 4.0)
    assert not stopper.update(2, 4.5) and not stopper.should_stop
    assert not stopper.update(3, math.nan) and stopper.should_stop
    assert (stopper.best_step, stopper.best_loss) == (1, 4.0)
    assert stopper.update(4, 3.0) and not stopper.should_stop  # an improvement resets the count
    never = EarlyStopping(patience=0)
    for step in range(10):
        never.update(step, 1.0)
    assert not never.should_stop


class ScriptedTrainer:
    """A one-parameter stand-in whose held-out losses are given in advance."""

    name = "scripted"

    def __init__(self, held_out: list[float]):
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.held_out = list(held_out)
        self.in_session = False

    def trainable_parameters(self):
        return [("weight", self.weight)]

    @contextmanager
    def session(self):
        self.in_session = True
        yield
        self.in_session = False

    def train_step(self) -> float:
        with torch.no_grad():
            self.weight += 1.0
        return 1.0

    def held_out_loss(self) -> float:
        return self.held_out.pop(0)


def test_run_stage_stops_early_and_keeps_the_best_weights():
    trainer = ScriptedTrainer([9.0, 5.0, 3.0, 4.0, 3.5, 1.0])
    report = run_stage(trainer, steps=10, eval_every=1, patience=2, progress=False)
    assert report.steps_run == 4 and report.stop_reason.startswith("early stop")
    assert report.best_step == 2 and report.best_held_out == 3.0
    assert float(trainer.weight) == 2.0  # weights of step 2, not of step 4
    assert [step for step, _ in report.held_out] == [0, 1, 2, 3, 4]
    assert not trainer.in_session

    full = run_stage(ScriptedTrainer([9.0, 8.0, 7.0]), steps=4, eval_every=2, patience=2,
                     progress=False)
    assert full.steps_run == 4 and full.stop_reason == "reached --steps 4"
    assert [step for step, _ in full.held_out] == [0, 2, 4]


# --- the two stages ------------------------------------------------------------------------

def test_stage1_trains_heads_and_keeps_the_backbone_frozen(split, ontology):
    torch.manual_seed(0)
    model = build_small_sam3(image_size=IMAGE_SIZE, seed=0)
    detector = model.detector
    frozen = {prefix: _snapshot(detector, prefix) for prefix in
              ("backbone.vision_backbone.trunk.", "backbone.language_backbone.",
               "backbone.vision_backbone.sam2_convs.")}
    heads = {prefix: _snapshot(detector, prefix) for prefix in
             ("transformer.decoder.", "transformer.encoder.", "segmentation_head.",
              "dot_prod_scoring.")}
    tracker = _snapshot(model.tracker)
    trainer = DetectorTrainer(model, split.train, split.held_out, ontology, batch_size=1,
                              held_out_limit=2, prompt_mix=SMALL_MIX, seed=0)
    with trainer.session():
        before = trainer.held_out_loss()
        losses = [trainer.train_step() for _ in range(2)]
        after = trainer.held_out_loss()
    assert all(math.isfinite(v) for v in (*losses, before, after)), (losses, before, after)
    for prefix, snapshot in frozen.items():
        assert _identical(snapshot, detector), f"{prefix} changed"
    for prefix, snapshot in heads.items():
        assert _changed(snapshot, detector), f"{prefix} did not train"
    assert _identical(tracker, model.tracker)
    # The session leaves the model as inference expects it.
    assert not detector.training and detector.matcher is None
    assert all(p.requires_grad for p in detector.parameters())


def test_stage1_backbone_lr_scale_trains_the_trunk_and_text_encoder(split, ontology):
    model = build_small_sam3(image_size=IMAGE_SIZE, seed=0)
    trunk = _snapshot(model.detector, "backbone.vision_backbone.trunk.")
    tracker_neck = _snapshot(model.detector, "backbone.vision_backbone.sam2_convs.")
    trainer = DetectorTrainer(model, split.train, split.held_out, ontology, batch_size=1,
                              held_out_limit=1, prompt_mix=SMALL_MIX, backbone_lr_scale=0.1)
    with trainer.session():
        assert math.isfinite(trainer.train_step())
    assert _changed(trunk, model.detector)
    assert _identical(tracker_neck, model.detector)


def test_stage2_trains_the_tracker_and_keeps_the_encoder_frozen(split):
    torch.manual_seed(0)
    model = build_small_sam3(image_size=IMAGE_SIZE, seed=0)
    detector = _snapshot(model.detector)
    tracker = _snapshot(model.tracker)
    trainer = TrackerTrainer(model, split.train, split.held_out, clip_length=3, max_objects=4,
                             held_out_limit=2, seed=0)
    with trainer.session():
        before = trainer.held_out_loss()
        losses = [trainer.train_step() for _ in range(2)]
        after = trainer.held_out_loss()
    assert all(math.isfinite(v) for v in (*losses, before, after)), (losses, before, after)
    assert _identical(detector, model.detector)
    changed = _changed(tracker, model.tracker)
    assert {name.split(".")[0] for name in changed} >= {"sam_mask_decoder", "transformer",
                                                        "maskmem_backbone"}
    assert not model.tracker.training


def test_stage2_feeds_the_tracker_what_the_cell_feeds_it(split):
    """Training and the run-time TrackerStream must give the tracker identical inputs."""
    model = build_small_sam3(image_size=IMAGE_SIZE, seed=0)
    from segmentation_node.sam3_backend.predictor import Sam3Predictor

    images = [frame.image() for frame in split.train[:2]]
    with torch.no_grad():
        backbone_out = Sam3Predictor(model).encode_images(images)
        levels, positions = tracker_levels(model.tracker, backbone_out["sam2_backbone_out"])
        ours = frame_features(model.tracker, levels, positions, frame=1, objects=3)
        theirs = TrackerStream(model)._tracker_features(backbone_out, view=1, objects=3)[1:]
    for a, b in zip(ours, theirs):
        for x, y in zip(a, b):
            assert torch.equal(torch.as_tensor(x), torch.as_tensor(y))


# --- the CLI -------------------------------------------------------------------------------

def test_cli_end_to_end(runs, tmp_path, capsys):
    out = tmp_path / "ft" / "model.pt"
    code = cli.main(["--data", *map(str, runs), "--allow-unaudited", "--base", "small",
                     "--stage", "both", "--steps", "2", "--eval-every", "1", "--patience", "3",
                     "--split-by", "camera", "--image-size", str(IMAGE_SIZE), "--batch-size", "1",
                     "--held-out-samples", "2", "--clip-length", "3", "--max-objects", "4",
                     "--seed", "1", "--no-progress", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads(cli.report_path(out).read_text())
    model = load_checkpoint(out, device="cpu")
    assert model.model_version == report["model_version"] and model.image_size == IMAGE_SIZE
    assert [s["steps_run"] for s in report["stages"]] == [2, 2]
    assert all(len(s["held_out"]) == 3 and s["stop_reason"] for s in report["stages"])
    assert report["split"]["by"] == "camera" and report["split"]["held_out_units"]
    assert "stage 1" in printed and "stage 2" in printed and "held-out loss" in printed
    assert f"model_version {model.model_version}" in printed


def test_cli_on_a_full_disk_says_so_in_one_line_and_leaves_no_torn_file(runs, tmp_path, capsys):
    with small_disk(tmp_path / "small", size="1m") as folder:
        code = cli.main(["--data", *map(str, runs), "--allow-unaudited", "--base", "small",
                         "--stage", "1", "--steps", "1", "--image-size", str(IMAGE_SIZE),
                         "--batch-size", "1", "--held-out-samples", "1", "--no-progress",
                         "--out", str(folder / "model.pt")])
        left = sorted(p.name for p in folder.rglob("*"))
    printed = capsys.readouterr()
    assert code == 1, printed.out + printed.err
    assert "Traceback" not in printed.err
    assert printed.err.strip().splitlines()[-1].endswith(
        "No space left on device; what was written before is whole; "
        "free space and rerun (--resume continues from the last saved step, if any)")
    assert not [name for name in left if name.endswith((".pt", ".tmp", ".json"))], left


def test_cli_refuses_unaudited_data(runs, tmp_path, capsys):
    code = cli.main(["--data", str(runs[0]), "--out", str(tmp_path / "m.pt"), "--no-progress"])
    assert code == 2
    assert "--allow-unaudited" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()
