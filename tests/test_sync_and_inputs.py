"""Input handling without ROS: approximate-time sync, camera health, image views."""
from types import SimpleNamespace

import numpy as np
import pytest

from segmentation_node.camera_health import CameraHealth
from segmentation_node.contract import CameraStatus
from segmentation_node.image_codec import SUPPORTED_ENCODINGS, ImageError, fields_of, to_rgb, view
from segmentation_node.sync import ApproximateSync

MS = 1_000_000


def collector():
    sets = []
    return sets, lambda *messages: sets.append(messages)


# --- approximate time (the cases message_filters' ApproximateTimeSynchronizer is known for) ------
def test_exact_stamps_make_a_set_in_input_order():
    sets, callback = collector()
    sync = ApproximateSync(2, queue_size=5, slop_s=0.01, callback=callback)
    sync.add(1, 100 * MS, "b0")
    assert sets == []
    sync.add(0, 100 * MS, "a0")
    assert sets == [("a0", "b0")]


def test_within_slop_pairs_beyond_slop_does_not():
    sets, callback = collector()
    sync = ApproximateSync(2, queue_size=5, slop_s=0.01, callback=callback)
    sync.add(0, 100 * MS, "a0")
    sync.add(1, 125 * MS, "b-late")  # 25 ms: outside the slop
    assert sets == []
    sync.add(1, 108 * MS, "b0")
    assert sets == [("a0", "b0")]


def test_closest_candidate_wins_and_used_messages_are_consumed():
    sets, callback = collector()
    sync = ApproximateSync(2, queue_size=5, slop_s=0.02, callback=callback)
    sync.add(1, 95 * MS, "b-far")
    sync.add(1, 101 * MS, "b-near")
    sync.add(0, 100 * MS, "a0")
    assert sets == [("a0", "b-near")]
    sync.add(0, 100 * MS + 1, "a1")  # b-near is gone; b-far (5 ms) is still there
    assert sets[-1] == ("a1", "b-far")


def test_three_inputs_need_all_within_slop():
    sets, callback = collector()
    sync = ApproximateSync(3, queue_size=5, slop_s=0.01, callback=callback)
    sync.add(0, 100 * MS, "a")
    sync.add(1, 106 * MS, "b")
    sync.add(2, 112 * MS, "c-too-far-from-a")  # 12 ms spread
    assert sets == []
    sync.add(2, 104 * MS, "c")
    assert sets == [("a", "b", "c")]


def test_queue_keeps_only_the_newest_messages():
    sets, callback = collector()
    sync = ApproximateSync(2, queue_size=2, slop_s=0.001, callback=callback)
    for stamp in (10, 20, 30):
        sync.add(0, stamp * MS, f"a{stamp}")
    sync.add(1, 10 * MS, "b10")  # a10 was dropped: no set
    assert sets == []
    sync.add(1, 30 * MS, "b30")
    assert sets == [("a30", "b30")]


def test_out_of_order_arrival_still_pairs():
    sets, callback = collector()
    sync = ApproximateSync(2, queue_size=5, slop_s=0.005, callback=callback)
    sync.add(0, 200 * MS, "a200")
    sync.add(0, 100 * MS, "a100")
    sync.add(1, 101 * MS, "b101")
    assert sets == [("a100", "b101")]


def test_bad_sync_settings_are_rejected():
    with pytest.raises(ValueError):
        ApproximateSync(2, queue_size=0, slop_s=0.01, callback=print)


# --- camera health ---------------------------------------------------------------------------------
def test_camera_health_rate_staleness_and_stamp_order():
    health = CameraHealth("cam_left", stale_after_s=0.5)
    assert health.status(0.0) == (CameraStatus.MISSING, "no image received yet")
    for i in range(11):
        assert health.accept((1000 + 100 * i) * MS, 10.0 + 0.1 * i) is None
    assert health.rate_hz(11.0) == pytest.approx(10.0)
    assert health.status(11.1)[0] is CameraStatus.OK
    status, detail = health.status(12.0)
    assert status is CameraStatus.STALE and "no image for 1.0 s" in detail
    problem = health.accept(1500 * MS, 12.1)
    assert "stamp went back" in problem
    assert health.status(12.1)[0] is CameraStatus.BAD_INPUT
    assert health.accept(2100 * MS, 12.2) is None
    assert health.status(12.2)[0] is CameraStatus.OK


# --- image views -----------------------------------------------------------------------------------
def image_message(array, encoding, step_padding=0):
    height, width = array.shape[:2]
    rows = array.reshape(height, -1).view(np.uint8)
    padded = np.zeros((height, rows.shape[1] + step_padding), np.uint8)
    padded[:, :rows.shape[1]] = rows
    return SimpleNamespace(height=height, width=width, encoding=encoding, is_bigendian=0,
                           step=padded.shape[1], data=padded.tobytes())


RGB = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
@pytest.mark.parametrize("padding", [0, 3])
def test_every_supported_encoding_gives_the_same_rgb(encoding, padding):
    source = {"rgb8": RGB, "bgr8": RGB[..., ::-1], "rgba8": np.dstack([RGB, np.full((4, 5), 7, np.uint8)]),
              "bgra8": np.dstack([RGB[..., ::-1], np.full((4, 5), 7, np.uint8)]), "mono8": RGB[..., 0]}[encoding]
    rgb = to_rgb(image_message(np.ascontiguousarray(source), encoding, padding))
    expected = np.repeat(RGB[..., :1], 3, axis=2) if encoding == "mono8" else RGB
    assert rgb.shape == (4, 5, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb, expected)


def test_rgb8_is_a_view_not_a_copy():
    message = image_message(RGB, "rgb8")
    assert not to_rgb(message).flags.owndata


@pytest.mark.parametrize("change, message", [
    (dict(encoding="yuv422"), "unsupported encoding 'yuv422'"),
    (dict(step=10), "step 10 is smaller"),
    (dict(height=9), "needs"),
    (dict(width=0), "empty image"),
])
def test_bad_images_are_clear_errors(change, message):
    bad = image_message(RGB, "rgb8")
    for key, value in change.items():
        setattr(bad, key, value)
    with pytest.raises(ImageError, match=message):
        view(bad)


def test_label_and_mask_arrays_encode_as_image_fields():
    labels = np.array([[0, 1], [2, 65535]], np.uint16)
    fields = fields_of(labels, "mono16")
    assert (fields["step"], fields["encoding"]) == (4, "mono16")
    assert np.array_equal(np.frombuffer(fields["data"], "<u2").reshape(2, 2), labels)
    with pytest.raises(ImageError):
        fields_of(labels, "mono8")
