"""A cell this project has never seen (tests/cell_recording.py: independent geometry and drawing,
bgr8 1280x720, stamps 4 ms apart, camera_info, a /tf_static chain): commissioned from the
recording, then run offline with the classical backend (no colour table there) and with
sam3_small: the intrusion monitor alone names the arm in every frame set that shows it, stops
the cell once it reaches over the bin, and reports nothing while the arm is away."""
import numpy as np
import pytest

from segmentation_node.backends import BackendSpec
from segmentation_node.commission import main as commission_main
from segmentation_node.contract import PICK_ZONE_INTRUSION_LABEL, Reason, Source
from segmentation_node.perception.commissioning import Commissioning
from segmentation_node.regression import run_offline
from tests.cell_recording import CAMERAS, ZONE_MAX, ZONE_YAML, Timeline, camera_poses, intrinsics, write_cell_recording

TIMELINE = Timeline()
EMPTY = f"0:{(TIMELINE.empty - 0.5) / TIMELINE.rate_hz:.2f}"  # seconds: the empty frames only


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    folder = tmp_path_factory.mktemp("own_cell")
    truth = write_cell_recording(folder / "recording", TIMELINE)
    (folder / "zone.yaml").write_text(ZONE_YAML)
    assert commission_main(["--bag", str(folder / "recording"), "--cameras", ",".join(CAMERAS), "--empty", EMPTY,
                            "--zone", str(folder / "zone.yaml"), "--part-size", "0.08",
                            "--out", str(folder / "cell.npz")]) == 0
    return folder, truth, Commissioning.load(folder / "cell.npz")


def test_commissioning_takes_calibration_from_camera_info_and_the_tf_chain(cell):
    _, _, commissioned = cell
    assert list(commissioned.cameras) == list(CAMERAS)
    for camera, setup in commissioned.cameras.items():
        np.testing.assert_allclose(setup.geometry.intrinsics, intrinsics(1280, 720))
        np.testing.assert_allclose(setup.geometry.world_from_camera, camera_poses()[camera]["workcell_from_optical"],
                                   atol=1e-9)
        assert setup.zone.shape == (720, 1280) and 0.02 < setup.zone.mean() < 0.6
        assert setup.background.median.shape == (720, 1280, 3)


@pytest.mark.parametrize("backend", ["classical", "sam3_small"])
def test_the_intrusion_monitor_names_the_arm_with_any_backend(cell, backend):
    folder, truth, commissioned = cell
    records = run_offline(folder / "recording", commissioned, "pick everything", BackendSpec(backend))
    assert len(records) == TIMELINE.frames, "stamps 4 ms apart pair up: every frame set is there"
    assert any(truth.arm_in_view.values()) and not all(truth.arm_in_view.values())
    for index, record in enumerate(records):
        intrusions = [i for view in record.views for i in view.instances if i.source is Source.INTRUSION]
        reasons = dict(record.reasons)
        if truth.arm_in_view[index]:
            assert intrusions and not record.actionable, f"frame set {index}: the arm is in view"
        else:
            assert not intrusions, f"frame set {index}: nothing foreign ({[i.label for i in intrusions]})"
        tip = TIMELINE.arm_tip_x(index)
        if tip is not None and tip < ZONE_MAX[0] - 0.05:  # well over the bin
            assert PICK_ZONE_INTRUSION_LABEL in reasons.get(Reason.AUTO_PAUSE_CLASS, ""), f"frame set {index}"
        elif tip is None:
            assert Reason.AUTO_PAUSE_CLASS not in reasons


def run_commission(folder, *changes):
    args = {"--bag": str(folder / "recording"), "--cameras": ",".join(CAMERAS), "--empty": EMPTY,
            "--zone": str(folder / "zone.yaml"), "--out": str(folder / "other.npz")}
    args.update(dict(zip(changes[::2], changes[1::2])))
    return commission_main([item for pair in args.items() for item in pair])


@pytest.mark.parametrize("change, message", [
    (("--cameras", "left,middle"), "has no /middle/camera_info"),
    (("--empty", "40:50"), "no image of left between 40 s and 50 s"),
    (("--empty", "3:1"), "START < END"),
    (("--zone", "elsewhere.yaml"), "zone file not found"),
])
def test_commissioning_errors_are_one_clear_line(cell, capsys, change, message):
    folder, _, _ = cell
    assert run_commission(folder, *change) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1 and "Traceback" not in error


def test_a_lying_camera_info_and_a_missing_transform_are_named(tmp_path, capsys):
    small = Timeline(empty=2, parts=0, arm=0)
    lying, honest = tmp_path / "lying", tmp_path / "honest"
    for folder, info_size in ((lying, (320, 240)), (honest, None)):
        folder.mkdir()
        write_cell_recording(folder / "recording", small, width=160, height=120, info_size=info_size)
        (folder / "zone.yaml").write_text(ZONE_YAML.replace("frame: workcell", "frame: conveyor"))
    assert run_commission(lying, "--empty", "0:1") == 2
    assert "/left/image_raw is 160x120 but its camera_info says 320x240" in capsys.readouterr().err
    assert run_commission(honest, "--empty", "0:1") == 2
    assert "no chain of static transforms from 'conveyor' to 'left_optical'" in capsys.readouterr().err
