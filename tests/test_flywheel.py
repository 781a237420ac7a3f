"""Data flywheel: pseudo-label filter, crash-safe shards, hard-case clips, audit. ROS-free."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

from segmentation_node.contract import GateState, Role, Source
from segmentation_node.flywheel import audit
from segmentation_node.flywheel.hard_cases import HardCasePolicy, HardCaseRecorder
from segmentation_node.flywheel.logger import FlywheelLogger, FlywheelPolicy
from segmentation_node.masks import BoxedMask
from segmentation_node.flywheel.pseudo_labels import PseudoLabelFilter, PseudoLabelPolicy
from segmentation_node.flywheel.shards import (LoggedFrameSet, LoggedInstance, LoggedView, ShardWriter,
                                               enforce_retention, list_shards, recover)
from segmentation_node.perception.actionability import Instance, Verdict
from segmentation_node.perception.ontology import load_ontology
from segmentation_node.perception.pipeline import FrameSetOutcome
from segmentation_node.perception.types import CameraFrame

H, W = 48, 64
CATEGORIES = sorted(load_ontology().classes)


def square(x: int, y: int, size: int = 10) -> BoxedMask:
    return BoxedMask(np.ones((size, size), bool), y, x, (H, W))


def instance(camera, track_id, label="part_a", score=0.95, stability=0.9, source=Source.MODEL, role=Role.TARGET,
             x=5):
    return Instance(camera, track_id, label, (), "metal disc", source, score, stability, square(x, 5), role)


def logged(sequence: int, cameras=("cam_a", "cam_b")) -> LoggedFrameSet:
    rng = np.random.default_rng(sequence)
    return LoggedFrameSet(sequence, tuple(
        LoggedView(camera, 1000 + sequence, f"{camera}_optical", rng.integers(0, 255, (H, W, 3), dtype=np.uint8),
                   (LoggedInstance(7, "part_a", "target", ("scratched",), 0.9, square(3 + sequence % 20, 4)),))
        for camera in cameras), {"model_version": "test"})


# --- pseudo-label filter --------------------------------------------------------------------------
def test_pseudo_labels_need_stability_over_frames_and_agreement_across_views():
    label_filter = PseudoLabelFilter(PseudoLabelPolicy(stable_frames=3, every_n=1, min_views=2))
    views = {"cam_a": [instance("cam_a", 1)], "cam_b": [instance("cam_b", 1)]}
    assert label_filter.select(views) == {}
    assert label_filter.select(views) == {}
    assert set(label_filter.select(views)) == {"cam_a", "cam_b"}
    disagreeing = {"cam_a": [instance("cam_a", 1)], "cam_b": [instance("cam_b", 1, label="part_b")]}
    assert label_filter.select(disagreeing) == {}


def test_a_view_with_one_doubtful_instance_is_not_a_label():
    label_filter = PseudoLabelFilter(PseudoLabelPolicy(stable_frames=1, every_n=1, min_views=2))
    doubtful = {"cam_a": [instance("cam_a", 1), instance("cam_a", 2, score=0.6, x=30)],
                "cam_b": [instance("cam_b", 1), instance("cam_b", 2, x=30)]}
    assert set(label_filter.select(doubtful)) == {"cam_b"}
    intrusion = Instance("cam_b", 0, "intrusion", (), "", Source.INTRUSION, 1.0, 1.0, square(40, 30), Role.FORBIDDEN)
    with_intrusion = {"cam_a": [instance("cam_a", 1)], "cam_b": [instance("cam_b", 1), intrusion]}
    assert set(label_filter.select(with_intrusion)) == {"cam_a"}
    explained = Instance("cam_b", 0, "intrusion", (), "", Source.INTRUSION, 1.0, 1.0, square(5, 5), Role.FORBIDDEN)
    kept = label_filter.select({"cam_a": [instance("cam_a", 1)], "cam_b": [instance("cam_b", 1), explained]})
    assert set(kept) == {"cam_a", "cam_b"} and explained not in kept["cam_b"]  # the model named what changed
    single_view = {"cam_a": [instance("cam_a", 1)], "cam_b": []}
    assert label_filter.select(single_view) == {}  # seen in one of two views only


def test_pseudo_labels_are_spaced_by_every_n():
    label_filter = PseudoLabelFilter(PseudoLabelPolicy(stable_frames=1, every_n=3))
    views = {"cam_a": [instance("cam_a", 1)], "cam_b": [instance("cam_b", 1)]}
    assert [bool(label_filter.select(views)) for _ in range(7)] == [True, False, False, True, False, False, True]


# --- shards ---------------------------------------------------------------------------------------
def test_sealed_shard_is_a_coco_dataset_with_the_exact_masks(tmp_path):
    writer = ShardWriter(tmp_path, "pseudo_label", CATEGORIES, run="line3", max_frame_sets=3)
    assert [writer.add(logged(i)) is not None for i in range(3)] == [False, False, True]
    (shard,) = list_shards(tmp_path)
    assert (shard.kind, shard.frame_sets, shard.images, shard.annotations) == ("pseudo_label", 3, 6, 6)
    coco = COCO(str(shard.path / "annotations.json"))
    annotation = coco.loadAnns(coco.getAnnIds(imgIds=[3]))[0]
    image = coco.loadImgs([3])[0]
    assert (image["camera"], image["run"], image["frame_index"]) == ("cam_a", "line3", 1)
    assert np.array_equal(coco.annToMask(annotation).astype(bool), square(4, 4).to_array())
    assert coco.loadCats(annotation["category_id"])[0]["name"] == "part_a"
    assert annotation["attributes"] == ["scratched"] and annotation["source"] == "pseudo_label"
    png = cv2.imread(str(shard.path / image["file_name"]))
    assert np.array_equal(cv2.cvtColor(png, cv2.COLOR_BGR2RGB), logged(1).views[0].image)
    assert not (shard.path / "records").exists() and not (shard.path / "pending_info.json").exists()
    assert writer.open_shard is None and not any((tmp_path / "open").iterdir())


def test_recovery_seals_complete_records_and_removes_torn_files(tmp_path):
    writer = ShardWriter(tmp_path, "hard_case", CATEGORIES, run="r", max_frame_sets=100)
    for sequence in range(3):
        writer.add(logged(sequence))
    open_shard = writer.open_shard
    (open_shard / "images" / "cam_a" / "999.png").write_bytes(b"\x89PNG torn")  # PNG whose record never landed
    (open_shard / "records" / ".00000003.json.x.tmp").write_text("{")           # a torn record write
    assert [path.parent.name for path in recover(tmp_path)] == ["shards"]
    (shard,) = list_shards(tmp_path)
    assert shard.frame_sets == 3
    files = {p.relative_to(shard.path).as_posix() for p in shard.path.rglob("*") if p.is_file()}
    assert "images/cam_a/999.png" not in files and not any(name.endswith(".tmp") for name in files)
    assert not any((tmp_path / "open").iterdir())


def test_retention_deletes_pseudo_labels_before_hard_cases_oldest_first(tmp_path):
    ids = []
    for kind in ("hard_case", "pseudo_label", "pseudo_label"):
        writer = ShardWriter(tmp_path, kind, CATEGORIES, run="r", max_frame_sets=2)
        writer.add(logged(1))
        ids.append(writer.add(logged(2)).name)
    sizes = {shard.shard_id: shard.bytes for shard in list_shards(tmp_path)}
    budget = sizes[ids[0]] + sizes[ids[2]]
    assert enforce_retention(tmp_path, budget) == [ids[1]]
    assert [s.shard_id for s in list_shards(tmp_path)] == [ids[0], ids[2]]
    assert enforce_retention(tmp_path, 0) == [ids[2], ids[0]]


WRITER_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_flywheel import CATEGORIES, logged
    from segmentation_node.flywheel.shards import ShardWriter
    writer = ShardWriter({root!r}, "pseudo_label", CATEGORIES, run="kill", max_frame_sets=7)
    sequence = 0
    while True:
        writer.add(logged(sequence))
        print("ack", sequence, flush=True)
        sequence += 1
""")


def test_kill_9_while_writing_loses_nothing_acknowledged_and_leaves_nothing_torn(tmp_path):
    root = tmp_path / "flywheel"
    script = WRITER_SCRIPT.format(tests=os.path.dirname(__file__), root=str(root))
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    acknowledged = []
    for line in process.stdout:
        acknowledged.append(int(line.split()[1]))
        if len(acknowledged) == 17:  # two sealed shards and three records of an open one
            break
    process.send_signal(signal.SIGKILL)
    process.wait()
    recover(root)
    stored = []
    for shard in list_shards(root):
        dataset = json.loads((shard.path / "annotations.json").read_text())
        for image in dataset["images"]:
            assert cv2.imread(str(shard.path / image["file_name"])) is not None
        stored += sorted({image["frame_index"] for image in dataset["images"]})
        for annotation in dataset["annotations"]:
            assert coco_mask.decode({"size": annotation["segmentation"]["size"],
                                     "counts": annotation["segmentation"]["counts"].encode()}).sum() == 100
    assert set(acknowledged) <= set(stored)
    assert stored == list(range(len(stored)))  # in order, no gaps, no duplicates
    assert not list(root.rglob("*.tmp"))


# --- hard cases -----------------------------------------------------------------------------------
def test_hard_case_clip_holds_frames_before_and_after_and_triggers_rest():
    clips = []
    recorder = HardCaseRecorder(HardCasePolicy(frames_before=2, frames_after=3, cooldown_frames=10), clips.append)
    for sequence in range(5):
        recorder.observe(logged(sequence))
    recorder.observe(logged(5), [("low_confidence", "part_a at 0.41")])
    recorder.trigger("mis_pick", "planner missed #7")  # joins the clip being collected
    for sequence in range(6, 12):
        recorder.observe(logged(sequence), [("low_confidence", "again")])  # resting: no new clip
    assert len(clips) == 1
    assert [f.sequence for f in clips[0].frame_sets] == [3, 4, 5, 6, 7, 8]
    assert clips[0].triggers == ["low_confidence: part_a at 0.41", "mis_pick: planner missed #7"]
    for sequence in range(12, 20):
        recorder.observe(logged(sequence), [("low_confidence", "later")])
    recorder.flush()
    assert [c.triggers[0] for c in clips] == ["low_confidence: part_a at 0.41", "low_confidence: later"]


# --- the logger as the node runs it ---------------------------------------------------------------
def outcome(views, auto_pause=()):
    return FrameSetOutcome(views, Verdict(False, 0.5, (), auto_pause), 1.0, False)


def test_logger_writes_pseudo_labels_and_a_hard_case_around_an_auto_pause(tmp_path):
    ontology = load_ontology()
    policy = FlywheelPolicy(PseudoLabelPolicy(stable_frames=2, every_n=2), HardCasePolicy(2, 2, 50),
                            frame_sets_per_shard=3)
    flywheel = FlywheelLogger(tmp_path, ontology, run="test", policy=policy, meta={"model_version": "m1"})
    frames = [CameraFrame(c, 5, np.full((H, W, 3), 90, np.uint8), f"{c}_optical") for c in ("cam_a", "cam_b")]
    steady = {c: [instance(c, 1)] for c in ("cam_a", "cam_b")}
    hand = {c: [instance(c, 1), instance(c, 2, label="hand", role=Role.FORBIDDEN, x=40)] for c in ("cam_a", "cam_b")}
    for sequence in range(1, 13):
        views, pause = (hand, ("hand",)) if sequence in (8, 9) else (steady, ())
        flywheel.observe(sequence, frames, outcome(views, pause), GateState.RUNNING)
    flywheel.close()
    stats = flywheel.stats
    assert stats.triggers == {"auto_pause": 1} and stats.hard_case_clips == 1 and stats.dropped == 0
    shards = list_shards(tmp_path)
    hard = [s for s in shards if s.kind == "hard_case"]
    assert len(hard) == 1 and hard[0].frame_sets == 5  # 2 before + the trigger + 2 after
    dataset = json.loads((hard[0].path / "annotations.json").read_text())
    assert sorted({i["frame_index"] for i in dataset["images"]}) == [6, 7, 8, 9, 10]
    assert dataset["images"][0]["meta"]["triggers"] == ["auto_pause: hand"]
    pseudo = [s for s in shards if s.kind == "pseudo_label"]
    frame_sets = sorted(json.loads((s.path / "annotations.json").read_text())["images"][0]["frame_index"]
                        for s in pseudo)
    assert sum(s.frame_sets for s in pseudo) == stats.pseudo_label_frame_sets == 5  # 2, 4, 6, (8, 9: hand) 10, 12
    assert frame_sets[0] == 2
    assert stats.acknowledged == 10 and stats.write_errors == 0


def test_logger_survives_a_disk_it_cannot_write(tmp_path):
    (tmp_path / "open").write_text("not a directory")  # every shard write fails (root ignores chmod)
    flywheel = FlywheelLogger(tmp_path, load_ontology(), run="broken",
                              policy=FlywheelPolicy(PseudoLabelPolicy(stable_frames=1, every_n=1)))
    frames = [CameraFrame(c, 5, np.zeros((H, W, 3), np.uint8)) for c in ("cam_a", "cam_b")]
    flywheel.observe(1, frames, outcome({c: [instance(c, 1)] for c in ("cam_a", "cam_b")}), GateState.RUNNING)
    flywheel.close()
    assert flywheel.stats.write_errors == 1 and flywheel.stats.acknowledged == 0
    assert "Not a directory" in flywheel.stats.last_error


# --- audit ----------------------------------------------------------------------------------------
@pytest.fixture()
def sealed_shard(tmp_path):
    writer = ShardWriter(tmp_path, "pseudo_label", CATEGORIES, run="r", max_frame_sets=10)
    for sequence in range(10):
        writer.add(logged(sequence))
    return list_shards(tmp_path)[0].path


def test_audit_sheet_is_reproducible_and_decisions_set_the_verdict(sealed_shard, tmp_path):
    sheet = audit.create_audit(sealed_shard, samples=5, max_reject_share=0.2)
    page = sheet.read_text()
    assert page.count("<img src=\"data:image/jpeg;base64,") == 5 and "workcell_audit decide" in page
    record = json.loads((sealed_shard / "audit.json").read_text())
    ids = [s["image_id"] for s in record["samples"]]
    assert audit.audit_verdict(sealed_shard) == "pending"
    with pytest.raises(audit.AuditError, match="never redrawn"):
        audit.create_audit(sealed_shard)
    with pytest.raises(audit.AuditError, match="not in this audit"):
        audit.record_decisions(sealed_shard, "ana", {999}, accept_rest=True)
    assert audit.record_decisions(sealed_shard, "ana", {ids[0]}, accept_rest=False)["verdict"] == "pending"
    assert audit.record_decisions(sealed_shard, "ana", {ids[0]}, accept_rest=True)["verdict"] == "accepted"  # 1/5
    assert audit.record_decisions(sealed_shard, "ana", {ids[0], ids[1]}, accept_rest=True)["verdict"] == "rejected"
    assert audit.audit_verdict(sealed_shard) == "rejected"


def test_audit_cli(sealed_shard, capsys):
    root = sealed_shard.parent.parent
    assert audit.main(["sheet", str(sealed_shard), "--samples", "3"]) == 0
    assert audit.main(["decide", str(sealed_shard), "--reviewer", "ana", "--accept-rest"]) == 0
    assert audit.main(["list", str(root)]) == 0
    out = capsys.readouterr().out
    assert "audit.html" in out and ": accepted" in out and "| pseudo_label | 10 | 20 | 20 |" in out
    assert audit.main(["decide", str(root / "shards" / "nope"), "--reviewer", "ana", "--accept-rest"]) == 2
    assert "no audit yet" in capsys.readouterr().err
