"""Exports of the synthetic workcell: COCO through pycocotools, rosbag2 through rosbags, and
byte-identical ground truth for the same seed."""
import hashlib
import json

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from rosbags.rosbag2 import Reader

from segmentation_node.masks import mask_from_counts
from segmentation_node.synthetic.cli import main as synth_main
from segmentation_node.bag_records import ros2_typestore
from segmentation_node.synthetic.export import GROUND_TRUTH_TOPIC, export_clip
from segmentation_node.synthetic.render import render_frame_set
from segmentation_node.synthetic.scene import ClipConfig, generate_clip

CONFIG = ClipConfig(seed=11, views=2, width=160, height=120, frames=4, rate_hz=5.0, parts=6, picks=1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    clip = generate_clip(CONFIG)
    out = tmp_path_factory.mktemp("synthetic")
    written = export_clip(clip, out, coco=True, bag_format="mcap", progress=False)
    renders = [render_frame_set(clip, index) for index in range(CONFIG.frames)]
    return clip, written, renders


def test_coco_round_trip_through_pycocotools(exported):
    clip, written, renders = exported
    coco = COCO(str(written["coco"]))
    assert len(coco.getImgIds()) == CONFIG.frames * CONFIG.views
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} >= {"part_a", "part_b", "hand", "tool"}
    checked = 0
    for image in coco.loadImgs(coco.getImgIds()):
        view = renders[image["frame_index"]][[c.name for c in clip.cameras].index(image["camera"])]
        pixels = cv2.cvtColor(cv2.imread(str(written["coco"].parent / image["file_name"])), cv2.COLOR_BGR2RGB)
        assert np.array_equal(pixels, view.image), "PNG must be lossless"
        for annotation in coco.loadAnns(coco.getAnnIds(imgIds=image["id"])):
            assert np.array_equal(coco.annToMask(annotation).astype(bool), view.mask(annotation["track_id"]))
            assert annotation["area"] == int(view.mask(annotation["track_id"]).sum())
            assert 0.0 < annotation["visible_fraction"] <= 1.0
            assert annotation["role"] in {"target", "forbidden", "ignore"}
            checked += 1
    assert checked >= CONFIG.frames * CONFIG.views * 5


def test_bag_round_trip_through_rosbags(exported):
    clip, written, renders = exported
    typestore = ros2_typestore()
    camera_index = {f"/{c.name}/image_raw": i for i, c in enumerate(clip.cameras)}
    stamps = [frame.stamp_ns for frame in clip.frames]
    seen = {"images": 0, "truth": 0}
    with Reader(written["bag"]) as reader:
        assert reader.duration >= stamps[-1] - stamps[0]
        topics = {c.topic for c in reader.connections}
        assert {"/tf_static", GROUND_TRUTH_TOPIC, "/cam_top/camera_info"} <= topics
        for connection, timestamp, raw in reader.messages():
            message = typestore.deserialize_cdr(raw, connection.msgtype)
            frame = stamps.index(timestamp)
            if connection.topic in camera_index:
                camera = clip.cameras[camera_index[connection.topic]]
                assert message.header.frame_id == camera.frame_id
                assert message.header.stamp.sec * 10**9 + message.header.stamp.nanosec == timestamp
                assert message.encoding == "rgb8" and message.step == 3 * camera.width
                image = message.data.reshape(camera.height, camera.width, 3)
                assert np.array_equal(image, renders[frame][camera_index[connection.topic]].image)
                seen["images"] += 1
            elif connection.topic == GROUND_TRUTH_TOPIC:
                for view_truth, view in zip(message.views, renders[frame]):
                    assert view_truth.header.frame_id == view.camera.frame_id
                    assert [i.track_id for i in view_truth.instances] == [i.track_id for i in view.instances]
                    for instance in view_truth.instances:
                        mask = mask_from_counts(instance.mask.counts, instance.mask.height, instance.mask.width)
                        assert np.array_equal(mask, view.mask(instance.track_id))
                seen["truth"] += 1
    assert seen == {"images": CONFIG.frames * CONFIG.views, "truth": CONFIG.frames}


def _digest(directory):
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_same_seed_gives_the_same_bytes_of_ground_truth(tmp_path):
    for name in ("a", "b"):
        export_clip(generate_clip(CONFIG), tmp_path / name, coco=True, bag_format=None, progress=False)
    assert (tmp_path / "a/coco/annotations.json").read_bytes() == (tmp_path / "b/coco/annotations.json").read_bytes()
    assert _digest(tmp_path / "a/coco") == _digest(tmp_path / "b/coco")
    export_clip(generate_clip(ClipConfig(**{**CONFIG.__dict__, "seed": 12})), tmp_path / "c", bag_format=None,
                progress=False)
    first = json.loads((tmp_path / "a/coco/annotations.json").read_text())["annotations"]
    other = json.loads((tmp_path / "c/coco/annotations.json").read_text())["annotations"]
    assert [a["segmentation"] for a in first] != [a["segmentation"] for a in other]


def test_cli_writes_sqlite3_bag_and_refuses_to_overwrite(tmp_path, capsys):
    args = ["--out", str(tmp_path / "run"), "--views", "2", "--size", "96x72", "--frames", "2",
            "--parts", "3", "--picks", "0", "--bag-format", "sqlite3", "--no-coco", "--quiet"]
    assert synth_main(args) == 0
    assert (tmp_path / "run/bag/bag.db3").exists() and not (tmp_path / "run/coco").exists()
    with Reader(tmp_path / "run/bag") as reader:
        assert reader.message_count > 0
    assert synth_main(args) == 2
    assert "exists" in capsys.readouterr().err
    assert not list(tmp_path.glob("run/.bag.partial*"))


def test_cli_rejects_a_bad_size(capsys):
    with pytest.raises(SystemExit):
        synth_main(["--out", "/tmp/unused", "--size", "big"])
    assert "640x480" in capsys.readouterr().err
