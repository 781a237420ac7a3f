"""Input handling without ROS: approximate-time sync, image views and format checks
(camera health: tests/test_camera_health.py)."""
from types import SimpleNamespace

import numpy as np
import pytest

from segmentation_node.image_codec import CV_BRIDGE_ENCODINGS, ImageError, check_format, fields_of, to_rgb, view
from segmentation_node.sync import ApproximateSync
from tests.camera_encodings import mosaic, yuv422

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


# --- image views -----------------------------------------------------------------------------------
def image_message(array, encoding, step_padding=0):
    height, width = array.shape[:2]
    rows = array.reshape(height, -1).view(np.uint8)
    padded = np.zeros((height, rows.shape[1] + step_padding), np.uint8)
    padded[:, :rows.shape[1]] = rows
    return SimpleNamespace(height=height, width=width, encoding=encoding, is_bigendian=0,
                           step=padded.shape[1], data=padded.tobytes())


RGB = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)


@pytest.mark.parametrize("encoding", CV_BRIDGE_ENCODINGS)
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
    (dict(encoding="nv12"), "unsupported encoding 'nv12'"),
    (dict(step=10), "step 10 is smaller"),
    (dict(height=9), "needs"),
    (dict(width=0), "empty image"),
])
def test_bad_images_are_clear_errors(change, message):
    bad = image_message(RGB, "rgb8")
    for key, value in change.items():
        setattr(bad, key, value)
    with pytest.raises(ImageError, match=message) as raised:
        view(bad)
    assert check_format(bad, None) == str(raised.value)  # one set of rules for both


class LengthOnly:
    """Message data that can be measured but not read: check_format must not touch pixels."""

    def __init__(self, size):
        self.size = size

    def __len__(self):
        return self.size


HD = SimpleNamespace(height=720, width=1280, encoding="bgr8", is_bigendian=0, step=1280 * 3,
                     data=LengthOnly(1280 * 720 * 3))


def test_format_check_passes_good_images_without_reading_pixels():
    assert check_format(HD, (720, 1280)) is None
    assert check_format(HD, None) is None
    assert check_format(image_message(RGB[..., 0].copy(), "mono8", step_padding=3), (4, 5)) is None


@pytest.mark.parametrize("change, expected", [
    (dict(encoding="nv12"), "unsupported encoding 'nv12'; supported: rgb8, bgr8, rgba8, bgra8, mono8, mono16, "
                            "yuv422, yuv422_yuy2, bayer_rggb8"),
    (dict(encoding="16UC1"), "unsupported encoding '16UC1'"),
    (dict(width=640, height=480, step=640 * 3), "image is 640x480, this camera is calibrated for 1280x720"),
    (dict(step=1000), "step 1000 is smaller than a row of 1280 bgr8 pixels (3840 bytes)"),
    (dict(data=LengthOnly(100)), "data has 100 bytes, 1280x720 bgr8 with step 3840 needs 2764800"),
    (dict(height=0), "empty image 1280x0"),
])
def test_format_check_finds_what_conversion_would(change, expected):
    bad = SimpleNamespace(**(vars(HD) | change))
    assert check_format(bad, (720, 1280)).startswith(expected)


def test_label_and_mask_arrays_encode_as_image_fields():
    labels = np.array([[0, 1], [2, 65535]], np.uint16)
    fields = fields_of(labels, "mono16")
    assert (fields["step"], fields["encoding"]) == (4, "mono16")
    assert np.array_equal(np.frombuffer(fields["data"], "<u2").reshape(2, 2), labels)
    with pytest.raises(ImageError):
        fields_of(labels, "mono8")


def _message(array: np.ndarray, encoding: str, big_endian: bool = False):
    data = array.astype(array.dtype.newbyteorder(">" if big_endian else "<")).tobytes()
    return SimpleNamespace(height=array.shape[0], width=array.shape[1], encoding=encoding,
                           is_bigendian=int(big_endian), step=len(data) // array.shape[0], data=data)


# Four flat colour blocks: demosaicing and chroma subsampling are exact inside each block.
BLOCKS = np.zeros((16, 16, 3), np.uint8)
BLOCKS[:8, :8], BLOCKS[:8, 8:], BLOCKS[8:, :8], BLOCKS[8:, 8:] = (200, 40, 30), (20, 180, 60), (30, 50, 220), (90, 90, 90)
INSIDE = (slice(2, 6), slice(2, 6)), (slice(2, 6), slice(10, 14)), (slice(10, 14), slice(2, 6)), (slice(10, 14), slice(10, 14))


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
@pytest.mark.parametrize("bits", [8, 16])
def test_bayer_mosaics_decode_to_the_colours_they_were_sampled_from(pattern, bits):
    """A mosaic built from the pattern's name (tests/camera_encodings.py) decodes back to the
    block colours; 16-bit keeps the high byte."""
    rgb = to_rgb(_message(mosaic(BLOCKS, pattern, bits), f"bayer_{pattern}{bits}"))
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    for block in INSIDE:
        assert np.abs(rgb[block].astype(int) - BLOCKS[block].astype(int)).max() <= 1, (pattern, block)


@pytest.mark.parametrize("encoding, order", [("yuv422", "UYVY"), ("yuv422_yuy2", "YUYV")])
def test_yuv422_decodes_to_the_colours_it_was_encoded_from(encoding, order):
    """Packed with the BT.601 video-range equations (tests/camera_encodings.py, not OpenCV): two
    pixels share U and V."""
    decoded = to_rgb(_message(yuv422(BLOCKS, order), encoding))
    for block in INSIDE:
        assert np.abs(decoded[block].astype(int) - BLOCKS[block].astype(int)).max() <= 3, block


@pytest.mark.parametrize("big_endian", [False, True])
def test_mono16_keeps_the_high_byte_in_either_byte_order(big_endian):
    values = np.array([[0, 255, 256, 65535], [4660, 32768, 511, 1000]], np.uint16)
    rgb = to_rgb(_message(values, "mono16", big_endian))
    assert np.array_equal(rgb, np.repeat((values >> 8).astype(np.uint8)[..., None], 3, axis=2))
