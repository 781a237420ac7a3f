"""The offline regression harness: record golden results from a recording, compare runs."""
from dataclasses import replace

import numpy as np
import pytest

from segmentation_node.contract import Source

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
    assert "has no /frame_set (frame-set results)" in capsys.readouterr().err


def _write_two_camera_bag(path, offsets_ns, frames=6, period_ns=66_666_666):
    """A recording written here with rosbags alone (not the synthetic exporter): two bgr8
    cameras whose stamps are `offsets_ns` apart, and one left image that has no partner."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    types = get_typestore(Stores.ROS2_KILTED)
    Image, Header, Time = (types.types[n] for n in ("sensor_msgs/msg/Image", "std_msgs/msg/Header",
                                                    "builtin_interfaces/msg/Time"))
    start = 1_700_000_000_000_000_000
    with Writer(path, version=9) as writer:
        connections = {c: writer.add_connection(f"/{c}/image_raw", "sensor_msgs/msg/Image", typestore=types)
                       for c in ("left", "right")}
        messages = []
        for index in range(frames):
            for camera, offset in zip(("left", "right"), offsets_ns):
                messages.append((start + index * period_ns + offset, camera, index))
        messages.append((start + frames * period_ns + period_ns // 2, "left", frames))  # no partner
        for stamp, camera, index in sorted(messages):
            pixels = np.full((24, 32, 3), (index * 20) % 256, np.uint8)
            header = Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id=f"{camera}_optical")
            message = Image(header=header, height=24, width=32, encoding="bgr8", is_bigendian=0, step=96,
                            data=pixels.ravel())
            writer.write(connections[camera], stamp, types.serialize_cdr(message, "sensor_msgs/msg/Image"))
    return start


def test_offline_frame_sets_are_assembled_like_the_node_does(tmp_path):
    """Stamps a few ms apart pair up within the node's slop, as live; identical-stamp pairing
    found none on such a recording. The frame set's stamp is its newest view's."""
    from segmentation_node.regression import camera_frame_sets

    start = _write_two_camera_bag(tmp_path / "rec", offsets_ns=(0, 3_000_000))
    sets = list(camera_frame_sets(tmp_path / "rec", ["left", "right"]))
    assert len(sets) == 6
    for index, (stamp, views) in enumerate(sets):
        assert [v.camera for v in views] == ["left", "right"]
        assert views[1].stamp_ns - views[0].stamp_ns == 3_000_000 and stamp == views[1].stamp_ns
        assert views[0].image.shape == (24, 32, 3) and int(views[0].image[0, 0, 0]) == (index * 20) % 256
        assert views[0].stamp_ns == start + index * 66_666_666
    assert list(camera_frame_sets(tmp_path / "rec", ["left", "right"], slop_s=0.001)) == []


def test_offline_record_runs_any_backend_with_the_intrusion_monitor(cell, tmp_path):
    """`record --backend sam3_small`: the random model names nothing useful, the commissioned
    cell's intrusion monitor still reports what changed (the tool left in the cell)."""
    folder, bag, commissioning, golden = cell
    out = tmp_path / "small"
    assert main(["record", "--bag", str(bag), "--commissioning", str(folder / "cell.npz"), "--backend",
                 "sam3_small", "--out", str(out)]) == 0
    records = read_records(out)
    assert len(records) == len(read_records(golden))
    assert all(r.model_version.startswith("sam3-small") for r in records)
    assert any(i.source is Source.INTRUSION for r in records for v in r.views for i in v.instances)
