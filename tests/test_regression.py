"""The offline regression harness: record golden results from a recording, compare runs."""
from dataclasses import replace

import numpy as np
import pytest

from segmentation_node.masks import BoxedMask
from segmentation_node.regression import compare, main, read_records, run_offline, write_records
from segmentation_node.synthetic.classical_setup import commission, train_classifier
from segmentation_node.synthetic.export import export_clip
from segmentation_node.synthetic.scene import ClipConfig, generate_clip

CELL = ClipConfig(seed=9, views=2, width=320, height=240, frames=8, stacking=False)


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    folder = tmp_path_factory.mktemp("regression")
    clip = generate_clip(CELL)
    bag = export_clip(clip, folder / "recording", coco=False, progress=False)["bag"]
    commissioning = commission(clip, train_classifier(replace(CELL, frames=8), seeds=(101,), frames_per_clip=3))
    commissioning.save(folder / "cell.npz")
    golden = write_records(run_offline(bag, commissioning, "pick everything"), folder / "golden")
    return folder, bag, commissioning, golden


def test_same_code_same_bag_passes(cell):
    folder, bag, commissioning, golden = cell
    again = run_offline(bag, commissioning, "pick everything")
    comparison = compare(read_records(golden), again)
    assert comparison.passed, comparison.report()
    assert comparison.compared == CELL.frames and comparison.instances > 20 and comparison.worst_iou == 1.0


def test_a_changed_decision_fails_with_a_readable_report(cell):
    folder, bag, commissioning, golden = cell
    changed = run_offline(bag, commissioning, "pick part_b")
    comparison = compare(read_records(golden), changed)
    assert not comparison.passed
    assert "role TARGET -> IGNORE" in comparison.report()


def test_changed_masks_ids_and_missing_frames_are_reported(cell):
    folder, bag, commissioning, golden = cell
    records = read_records(golden)
    first, rest = records[0], records[1:]
    view = first.views[0]
    shifted = tuple(replace(i, mask=BoxedMask.from_array(np.roll(i.mask.to_array(), -6, axis=1)))
                    if n == 0 else i for n, i in enumerate(view.instances))
    renumbered = tuple(replace(i, track_id=i.track_id + 1000) if n == 1 else i for n, i in enumerate(shifted))
    tampered = [replace(first, views=(replace(view, instances=renumbered),) + first.views[1:])] + rest[:-1]
    report = compare(records, tampered, min_iou=0.95).report()
    assert report.startswith("FAIL")
    assert "mask IoU" in report and "id mapping changed" in report and "1 missing" in report


def test_cli_record_and_compare(cell, tmp_path, capsys):
    folder, bag, _, golden = cell
    out = tmp_path / "candidate"
    assert main(["record", "--bag", str(bag), "--commissioning", str(folder / "cell.npz"), "--out", str(out)]) == 0
    assert main(["compare", str(golden), str(out)]) == 0
    assert "PASS: 8 frame sets compared" in capsys.readouterr().out
    assert main(["compare", str(golden), str(bag)]) == 2  # a recording has no results topic
    assert "has no topic /frame_set" in capsys.readouterr().err
