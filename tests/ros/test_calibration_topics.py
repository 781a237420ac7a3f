"""camera_info and /tf_static over DDS, to a node in its own process, fed the independently
written cell recording (tests/cell_recording.py, at 320x180): a commissioned node reports a
camera whose camera_info no longer matches (its images are bad input until it does again); a
node without a commissioning file takes each camera's pose from the /tf_static chain and its
image size from camera_info."""
import time

import cv2
import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import Quaternion, Transform, TransformStamped, Vector3
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from segmentation_node.calibration import Zone
from segmentation_node.commission import commission_recording
from segmentation_node.contract import SEGMENTATION_NODE, CameraStatus
from segmentation_node.regression import recorded_images
from segmentation_node.ros.messages import endpoint_qos, stamp_of
from tests.cell_recording import (CAMERAS, LINK_FROM_OPTICAL, WORKCELL_FROM_BASE, ZONE_YAML, Timeline, _quaternion,
                                  camera_poses, intrinsics, write_cell_recording)
from tests.ros.harness import node_process, spin_until
from workcell_segmentation.msg import FrameSetResult

WIDTH, HEIGHT = 320, 180
TIMELINE = Timeline()


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calibration_topics")
    write_cell_recording(folder / "recording", TIMELINE, width=WIDTH, height=HEIGHT)
    (folder / "zone.yaml").write_text(ZONE_YAML)
    commission_recording(folder / "recording", list(CAMERAS), (0.0, (TIMELINE.empty - 0.5) / TIMELINE.rate_hz),
                         Zone.load(folder / "zone.yaml"), 0.08).save(folder / "cell.npz")
    empty = {}
    for _, camera, recorded in recorded_images(folder / "recording", list(CAMERAS)):
        empty.setdefault(camera, recorded)  # the first frame: the empty cell
    return folder, empty


@pytest.fixture
def client():
    rclpy.init()
    node = Node("calibration_test_client")
    node.results = []
    node.create_subscription(FrameSetResult, "frame_set", node.results.append,
                             endpoint_qos(SEGMENTATION_NODE, "frame_set"))
    reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    node.images = {c: node.create_publisher(Image, f"{c}/image_raw", reliable) for c in CAMERAS}
    node.infos = {c: node.create_publisher(CameraInfo, f"{c}/camera_info", reliable) for c in CAMERAS}
    # As tf2's static broadcaster: latched, so a node started later still gets it.
    node.tf_static = node.create_publisher(TFMessage, "/tf_static", QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    try:
        yield node
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def transform(parent, child, pose):
    x, y, z, w = _quaternion(pose[:3, :3])
    t = pose[:3, 3]
    return TransformStamped(header=Header(frame_id=parent), child_frame_id=child, transform=Transform(
        translation=Vector3(x=t[0], y=t[1], z=t[2]), rotation=Quaternion(x=x, y=y, z=z, w=w)))


def static_chain() -> TFMessage:
    transforms = [transform("workcell", "cell_base", WORKCELL_FROM_BASE)]
    for camera in CAMERAS:
        transforms += [transform("cell_base", f"{camera}_link", camera_poses()[camera]["base_from_link"]),
                       transform(f"{camera}_link", f"{camera}_optical", LINK_FROM_OPTICAL)]
    return TFMessage(transforms=transforms)


def camera_info(camera, k):
    return CameraInfo(header=Header(frame_id=f"{camera}_optical"), width=WIDTH, height=HEIGHT,
                      distortion_model="plumb_bob", d=[0.0] * 5, k=np.ravel(k).tolist())


def send(client, empty, infos, size=(WIDTH, HEIGHT)):
    """One frame set stamped now (the empty cell), each camera's camera_info with it."""
    stamp = stamp_of(time.time_ns())
    for camera in CAMERAS:
        recorded = empty[camera]
        pixels = np.asarray(recorded.data, np.uint8).reshape(recorded.height, recorded.width, 3)
        if size != (WIDTH, HEIGHT):
            pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
        header = Header(stamp=stamp, frame_id=f"{camera}_optical")
        client.images[camera].publish(Image(header=header, height=pixels.shape[0], width=pixels.shape[1],
                                            encoding=recorded.encoding, step=pixels.shape[1] * 3,
                                            data=pixels.tobytes()))
        info = infos[camera]
        info.header.stamp = stamp
        client.infos[camera].publish(info)


def stream_until(client, empty, infos, condition, what, size=(WIDTH, HEIGHT), timeout_s=90.0):
    """Frame sets every 0.2 s until a result published after the first satisfies `condition`."""
    deadline = time.monotonic() + timeout_s
    seen = len(client.results)
    while True:
        assert time.monotonic() < deadline, f"timed out: {what}"
        send(client, empty, infos, size)
        end = time.monotonic() + 0.2
        while time.monotonic() < end:
            rclpy.spin_once(client, timeout_sec=0.02)
        matching = [r for r in client.results[seen:] if condition(r)]
        if matching:
            return matching[-1]


def camera(result, name):
    return next(view for view in result.views if view.camera_name == name)


def status(name, expected, detail=""):
    return lambda result: camera(result, name).camera_status == int(expected) \
        and detail in camera(result, name).camera_detail


def test_a_commissioned_camera_whose_camera_info_changed_is_bad_input_until_it_matches(cell, client):
    folder, empty = cell
    matching = {c: camera_info(c, intrinsics(WIDTH, HEIGHT)) for c in CAMERAS}
    log = folder / "commissioned.log"
    with node_process("segmentation_node.ros.segmentation", "-p", f"commissioning_file:={folder / 'cell.npz'}",
                      "-p", f"cameras:=[{','.join(CAMERAS)}]", "-p", "stale_after_s:=2.0", log_path=log):
        spin_until(client, lambda: all(p.get_subscription_count() for p in client.infos.values()),
                   "the node's camera_info subscriptions")
        stream_until(client, empty, matching, lambda r: all(status(c, CameraStatus.OK)(r) for c in CAMERAS),
                     "both cameras OK with the commissioned camera_info")

        refocused = dict(matching, left=camera_info("left", intrinsics(WIDTH, HEIGHT) * [[1.02, 1, 1], [1, 1, 1],
                                                                                         [1, 1, 1]]))
        result = stream_until(client, empty, refocused, status("left", CameraStatus.BAD_INPUT, "intrinsics differ"),
                              "left: camera_info no longer matches the commissioning")
        assert not result.actionable
        assert "fx 288.0 -> 293.8" in camera(result, "left").camera_detail
        assert status("right", CameraStatus.OK)(result), "the other camera is not affected"

        stream_until(client, empty, matching, status("left", CameraStatus.OK), "left OK once camera_info matches")
    lines = log.read_text()
    assert lines.count("]: left: camera_info intrinsics differ from the commissioning") == 1, \
        "one log line when the mismatch starts, not one per camera_info"
    assert "]: left: camera_info matches the commissioning" in lines


def test_without_commissioning_the_node_takes_calibration_from_camera_info_and_tf_static(cell, client):
    folder, empty = cell
    client.tf_static.publish(static_chain())  # before the node starts: latched
    infos = {c: camera_info(c, intrinsics(WIDTH, HEIGHT)) for c in CAMERAS}
    log = folder / "uncommissioned.log"
    with node_process("segmentation_node.ros.segmentation", "-p", "backend:=sam3_small",
                      "-p", f"cameras:=[{','.join(CAMERAS)}]", "-p", "stale_after_s:=5.0", log_path=log):
        spin_until(client, lambda: all(p.get_subscription_count() for p in client.infos.values()),
                   "the node's camera_info subscriptions")
        # Images of another size than camera_info says: bad input, with the reason.
        result = stream_until(client, empty, infos, status("left", CameraStatus.BAD_INPUT, "calibrated for 320x180"),
                              "images smaller than camera_info says are bad input", size=(160, 90))
        assert "image is 160x90" in camera(result, "left").camera_detail
        stream_until(client, empty, infos, lambda r: all(status(c, CameraStatus.OK)(r) for c in CAMERAS),
                     "both cameras OK at camera_info's size")
    lines = log.read_text()
    for name in CAMERAS:
        assert f"]: {name}: 320x180, geometry from camera_info and /tf_static (workcell -> {name}_optical)" in lines
