"""Golden run through the live node: a recording replayed over DDS at its pace (rate factor),
the node's results recorded to a bag and compared with another run and with the offline mode."""
import subprocess
import sys

import pytest
from rosbags.rosbag2 import Reader

from segmentation_node.regression import compare, read_records, run_offline
from tests.ros.harness import node_process
from tests.test_regression import CELL, cell  # noqa: F401 - the same recording and commissioning


@pytest.fixture(scope="module")
def recording(cell):
    folder, bag, commissioning, _ = cell
    with Reader(bag) as reader:
        cameras = sorted(c.topic.split("/")[1] for c in reader.connections if c.topic.endswith("/image_raw"))
    return folder, bag, commissioning, cameras


def live_run(folder, bag, cameras, out, intent="pick everything", frame_sets=CELL.frames):
    """A fresh node per run, as a regression job would start one."""
    args = ("-p", f"commissioning_file:={folder / 'cell.npz'}", "-p", f"cameras:=[{','.join(cameras)}]",
            "-p", "gate_node:=regression_replay")
    with node_process("segmentation_node.ros.segmentation", *args, log_path=folder / f"{out}.log"):
        run = subprocess.run([sys.executable, "-m", "segmentation_node.regression", "live", "--bag", str(bag),
                              "--cameras", ",".join(cameras), "--rate", "0.5", "--intent", intent,
                              "--out", str(folder / out)], capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    assert f"replayed {frame_sets} frame sets" in run.stdout and "0 without a result" in run.stdout, run.stdout
    return read_records(folder / out)


def test_live_golden_run_matches_the_next_run_and_the_offline_mode(recording):
    folder, bag, commissioning, cameras = recording
    golden = live_run(folder, bag, cameras, "live_golden")
    assert len(golden) == CELL.frames and any(record.actionable for record in golden)
    again = live_run(folder, bag, cameras, "again")
    comparison = compare(golden, again)
    assert comparison.passed and comparison.worst_iou == 1.0, comparison.report()
    offline = compare(golden, run_offline(bag, commissioning, "pick everything"))
    assert offline.passed, offline.report()

    changed = compare(golden, live_run(folder, bag, cameras, "changed", intent="pick part_b"))
    assert not changed.passed and "role TARGET -> IGNORE" in changed.report()
    cli = subprocess.run([sys.executable, "-m", "segmentation_node.regression", "compare", str(folder / "live_golden"),
                          str(folder / "changed")], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 1 and cli.stdout.startswith("FAIL:")


def test_a_recorded_cell_live_and_offline_see_the_same_frame_sets(tmp_path):
    """The independently written recording (stamps 4 ms apart, bgr8 1280x720), commissioned from
    itself: the node pairs the views into as many frame sets as the offline mode, with the same
    decisions and intrusion regions."""
    from segmentation_node.commission import commission_recording
    from segmentation_node.calibration import Zone
    from tests.cell_recording import CAMERAS, ZONE_YAML, Timeline, write_cell_recording

    timeline = Timeline()
    write_cell_recording(tmp_path / "recording", timeline)
    (tmp_path / "zone.yaml").write_text(ZONE_YAML)
    commissioned = commission_recording(tmp_path / "recording", list(CAMERAS),
                                        (0.0, (timeline.empty - 0.5) / timeline.rate_hz),
                                        Zone.load(tmp_path / "zone.yaml"), 0.08)
    commissioned.save(tmp_path / "cell.npz")
    offline = run_offline(tmp_path / "recording", commissioned, "pick everything")
    assert len(offline) == timeline.frames
    live = live_run(tmp_path, tmp_path / "recording", list(CAMERAS), "live", frame_sets=timeline.frames)
    comparison = compare(offline, live)
    assert comparison.passed and comparison.compared == timeline.frames, comparison.report()
    assert any(i.label for r in live for v in r.views for i in v.instances), "the arm's intrusion regions compare"
