"""A synthetic bag written by rosbags deserializes with rclpy's own CDR into the generated
message classes, as `ros2 bag play` would hand it to our nodes."""
import numpy as np
import pytest
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import CameraInfo, Image

from segmentation_node.masks import mask_from_counts
from segmentation_node.synthetic.export import GROUND_TRUTH_TOPIC, export_clip
from segmentation_node.synthetic.render import render_frame_set
from segmentation_node.synthetic.scene import ClipConfig, generate_clip
from workcell_segmentation.msg import FrameSetResult

CONFIG = ClipConfig(seed=5, views=3, width=128, height=96, frames=3, parts=5, picks=0)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_rclpy_reads_what_rosbags_wrote(tmp_path, storage):
    clip = generate_clip(CONFIG)
    bag = export_clip(clip, tmp_path, coco=False, bag_format=storage, progress=False)["bag"]
    renders = [render_frame_set(clip, index) for index in range(CONFIG.frames)]
    stamps = [frame.stamp_ns for frame in clip.frames]
    names = [camera.name for camera in clip.cameras]
    counts = {"image": 0, "info": 0, "truth": 0}
    with Reader(bag) as reader:
        for connection, timestamp, raw in reader.messages():
            frame = stamps.index(timestamp)
            topic = connection.topic
            if topic.endswith("/image_raw"):
                view = renders[frame][names.index(topic.split("/")[1])]
                image = deserialize_message(raw, Image)
                assert (image.height, image.width, image.encoding) == (96, 128, "rgb8")
                assert image.header.frame_id == view.camera.frame_id
                assert np.array_equal(np.frombuffer(bytes(image.data), np.uint8).reshape(96, 128, 3), view.image)
                counts["image"] += 1
            elif topic.endswith("/camera_info"):
                info = deserialize_message(raw, CameraInfo)
                camera = clip.cameras[names.index(topic.split("/")[1])]
                assert np.allclose(np.asarray(info.k).reshape(3, 3), camera.intrinsics)
                counts["info"] += 1
            elif topic == GROUND_TRUTH_TOPIC:
                truth = deserialize_message(raw, FrameSetResult)
                assert [view.camera_name for view in truth.views] == names
                for view_truth, view in zip(truth.views, renders[frame]):
                    for instance in view_truth.instances:
                        mask = mask_from_counts(instance.mask.counts, view.camera.height, view.camera.width)
                        assert np.array_equal(mask, view.mask(instance.track_id))
                        assert instance.role == int(next(i.role for i in view.instances
                                                         if i.track_id == instance.track_id))
                counts["truth"] += 1
    assert counts == {"image": 9, "info": 9, "truth": 3}
