"""Camera inputs as real drivers publish them, over DDS to a node in its own process: every raw
encoding the node accepts (packed by tests/camera_encodings.py), switched from one frame set to
the next on one camera (an encoding that changes mid-stream), and image_transport's compressed
stream (JPEG and PNG) on another; a corrupt compressed frame is bad input with its reason."""
import time

import cv2
import pytest
import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from segmentation_node.contract import SEGMENTATION_NODE, CameraStatus
from segmentation_node.image_codec import SUPPORTED_ENCODINGS
from segmentation_node.ros.messages import endpoint_qos, nanoseconds, stamp_of
from tests.camera_encodings import encode
from tests.ros.cell_stream import CAMERAS, make_cell
from tests.ros.harness import node_process, spin_until
from workcell_segmentation.msg import FrameSetResult

COMPRESSED, RAW = "cam_top", "cam_left"  # cam_right stays rgb8


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    folder = tmp_path_factory.mktemp("camera_inputs")
    renders, hand = make_cell(folder)
    return folder, renders, [i for i, h in enumerate(hand) if not h]


@pytest.fixture(scope="module")
def client(cell):
    folder, _, _ = cell
    rclpy.init()
    node = Node("camera_inputs_client")
    node.results = []
    node.create_subscription(FrameSetResult, "frame_set", node.results.append,
                             endpoint_qos(SEGMENTATION_NODE, "frame_set"))
    reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    node.raw = {c: node.create_publisher(Image, f"{c}/image_raw", reliable) for c in CAMERAS if c != COMPRESSED}
    node.compressed = node.create_publisher(CompressedImage, f"{COMPRESSED}/image_raw/compressed", reliable)
    transport = ",".join("compressed" if c == COMPRESSED else "raw" for c in CAMERAS)
    try:
        with node_process("segmentation_node.ros.segmentation", "-p", f"commissioning_file:={folder / 'cell.npz'}",
                          "-p", "stale_after_s:=2.0", "-p", f"transport:=[{transport}]",
                          log_path=folder / "segmentation.log"):
            spin_until(node, lambda: node.compressed.get_subscription_count() > 0
                       and all(p.get_subscription_count() for p in node.raw.values()),
                       "the node's raw and compressed subscriptions", timeout_s=60)
            yield node
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def send(client, renders, index, encoding="rgb8", compression=".png", damage=None):
    """One frame set stamped now: RAW in `encoding`, COMPRESSED as `compression` bytes."""
    stamp_ns = time.time_ns()
    for camera, render in zip(CAMERAS, renders[index]):
        header = Header(stamp=stamp_of(stamp_ns), frame_id=render.camera.frame_id)
        if camera == COMPRESSED:
            ok, data = cv2.imencode(compression, render.image[..., ::-1])
            data = data.tobytes() if damage is None else damage(data.tobytes())
            name = compression.lstrip(".").replace("jpg", "jpeg")
            client.compressed.publish(CompressedImage(header=header, format=f"rgb8; {name} compressed bgr8", data=data))
            continue
        pixels = encode(render.image, encoding if camera == RAW else "rgb8")
        client.raw[camera].publish(Image(header=header, height=pixels.shape[0], width=pixels.shape[1],
                                         encoding=encoding if camera == RAW else "rgb8", is_bigendian=0,
                                         step=pixels.strides[0], data=pixels.tobytes()))
    return stamp_ns


def stream_until(client, renders, frames, condition, what, timeout_s=60.0, own=True, **options):
    """Frame sets every 0.2 s until the result of one of them (own=False: any result published
    meanwhile, the watchdog's too) satisfies `condition`."""
    deadline = time.monotonic() + timeout_s
    sent, count, seen = set(), 0, len(client.results)
    while True:
        assert time.monotonic() < deadline, f"timed out: {what}"
        sent.add(send(client, renders, frames[count % len(frames)], **options))
        count += 1
        end = time.monotonic() + 0.2
        while time.monotonic() < end:
            rclpy.spin_once(client, timeout_sec=0.02)
        for result in client.results[seen:]:
            if (not own or nanoseconds(result.header.stamp) in sent) and condition(result):
                return result


def view(result, camera):
    return next(v for v in result.views if v.camera_name == camera)


def healthy(result, *cameras):
    return all(view(result, c).camera_status == int(CameraStatus.OK) for c in cameras)


def test_every_encoding_mid_stream_and_the_compressed_stream_are_converted(cell, client):
    _, renders, frames = cell
    for step, encoding in enumerate(SUPPORTED_ENCODINGS):
        compression = (".png", ".jpg")[step % 2]
        result = stream_until(client, renders, frames, lambda r: True, f"a result of {RAW} in {encoding}",
                              encoding=encoding, compression=compression)
        for camera in (RAW, COMPRESSED):
            seen = view(result, camera)
            assert (seen.width, seen.height) == (320, 240), (encoding, camera)
            assert seen.camera_status == int(CameraStatus.OK), f"{encoding} / {compression}: {seen.camera_detail}"


@pytest.mark.parametrize("damage, why", [
    (lambda data: data[:len(data) // 2], "corrupt compressed frame"),
    (lambda data: b"", "compressed image with no data"),
])
def test_a_corrupt_compressed_frame_is_bad_input_until_good_ones_follow(cell, client, damage, why):
    _, renders, frames = cell
    stream_until(client, renders, frames, lambda r: healthy(r, *CAMERAS), "all cameras OK")
    # A frame without data is refused in the callback (no frame set forms: the watchdog reports),
    # a truncated one once the worker decodes it.
    result = stream_until(client, renders, frames, lambda r: view(r, COMPRESSED).camera_status
                          == int(CameraStatus.BAD_INPUT), "the corrupt frame reported", own=False,
                          compression=".jpg", damage=damage)
    assert why in view(result, COMPRESSED).camera_detail and not result.actionable
    assert healthy(result, RAW), "the other cameras are not affected"
    stream_until(client, renders, frames, lambda r: healthy(r, *CAMERAS), "OK again after good frames")
