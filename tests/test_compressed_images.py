"""CompressedImage decoding and the 16-bit rule (ROS-free). Images are encoded here by Pillow,
an implementation independent of the OpenCV decoder the node uses, and compared with Pillow's
own decoding of the same bytes."""
import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image as PilImage

from segmentation_node.image_codec import (ImageError, SixteenBitRule, check_compressed, decode_compressed, to_rgb)

RNG = np.random.default_rng(3)
# Smooth colour ramps plus a little noise: what a camera sees, and what JPEG is made for.
ROWS, COLUMNS = np.mgrid[0:90, 0:120]
PICTURE = np.stack([ROWS * 2.5, COLUMNS * 2, 255 - ROWS - COLUMNS], axis=2).clip(0, 255).astype(np.uint8)
PICTURE = (PICTURE.astype(int) + RNG.integers(-4, 5, PICTURE.shape)).clip(0, 255).astype(np.uint8)


def compressed(array, pil_format, format_field=None):
    buffer = io.BytesIO()
    PilImage.fromarray(array).save(buffer, format=pil_format)
    return SimpleNamespace(format=format_field or pil_format.lower(), data=buffer.getvalue())


def pillow_decoded(message) -> np.ndarray:
    return np.asarray(PilImage.open(io.BytesIO(message.data)).convert("RGB"))


@pytest.mark.parametrize("format_field", ["png", "rgb8; png compressed bgr8"])
def test_png_decodes_to_exactly_the_pixels_it_was_encoded_from(format_field):
    message = compressed(PICTURE, "PNG", format_field=format_field)
    assert np.array_equal(decode_compressed(message), PICTURE)


@pytest.mark.parametrize("format_field", ["jpeg", "bgr8; jpeg compressed bgr8"])
def test_jpeg_decodes_as_an_independent_decoder_does(format_field):
    message = compressed(PICTURE, "JPEG", format_field=format_field)
    ours, theirs = decode_compressed(message), pillow_decoded(message)
    assert ours.shape == PICTURE.shape and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 2, "IDCT rounding differs by a level or two"
    assert np.abs(ours.astype(int) - PICTURE.astype(int)).mean() < 4, "and it is the picture, not just any image"


def test_grey_jpeg_and_16_bit_png_follow_the_same_rules_as_raw_images():
    grey = PICTURE[..., 1]
    decoded = decode_compressed(compressed(grey, "JPEG"))
    assert decoded.shape == (90, 120, 3) and np.array_equal(decoded[..., 0], decoded[..., 2])
    deep = (grey.astype(np.uint16) * 257 + RNG.integers(0, 200, grey.shape)).astype(np.uint16)
    message = compressed(deep, "PNG")
    assert np.array_equal(decode_compressed(message)[..., 0], (deep >> 8).astype(np.uint8))
    assert np.array_equal(decode_compressed(message, to_8bit=SixteenBitRule("shift:4"))[..., 0],
                          np.minimum(deep >> 4, 255).astype(np.uint8))


@pytest.mark.parametrize("damage, why", [
    (lambda data: data[:len(data) // 2], "corrupt compressed frame"),
    (lambda data: b"\xff\xd8\xff" + bytes(RNG.integers(0, 256, 400, dtype=np.uint8)), "corrupt compressed frame"),
    (lambda data: b"", "no data"),
])
@pytest.mark.parametrize("pil_format", ["JPEG", "PNG"])
def test_a_corrupt_frame_is_a_clear_error(damage, why, pil_format):
    message = compressed(PICTURE, pil_format)
    message.data = damage(message.data)
    with pytest.raises(ImageError, match=why):
        decode_compressed(message)


@pytest.mark.parametrize("format_field, why", [
    ("16UC1; compressedDepth png", "compressed depth image, not a camera image"),
    ("tiff", "unsupported compressed format 'tiff'"),
])
def test_formats_that_are_not_camera_images_are_refused_from_the_fields_alone(format_field, why):
    message = SimpleNamespace(format=format_field, data=b"\x00" * 10)
    assert why in check_compressed(message)


def test_the_calibrated_size_is_checked_once_decoded():
    with pytest.raises(ImageError, match="image is 120x90, this camera is calibrated for 640x480"):
        decode_compressed(compressed(PICTURE, "PNG"), (480, 640))


def _mono16(values):
    return SimpleNamespace(height=values.shape[0], width=values.shape[1], encoding="mono16", is_bigendian=0,
                           step=values.shape[1] * 2, data=values.astype("<u2").tobytes())


def test_sixteen_bit_rules():
    twelve_bit = np.array([[0, 15, 16, 4095], [2048, 100, 4000, 1]], np.uint16)  # a 12-bit sensor's values
    assert np.array_equal(to_rgb(_mono16(twelve_bit))[..., 0], twelve_bit >> 8), "default: the high byte"
    assert np.array_equal(to_rgb(_mono16(twelve_bit), SixteenBitRule("shift:4"))[..., 0], twelve_bit >> 4)
    assert to_rgb(_mono16(np.array([[65535, 4096]], np.uint16)), SixteenBitRule("shift:4"))[0, :, 0].tolist() \
        == [255, 255], "saturates above"
    stretched = to_rgb(_mono16(twelve_bit), SixteenBitRule("range"))[..., 0]
    assert stretched.min() == 0 and stretched.max() == 255
    assert stretched[1, 0] == round(2048 * 255 / 4095)
    assert not to_rgb(_mono16(np.full((2, 2), 900, np.uint16)), SixteenBitRule("range")).any(), "flat: black"


@pytest.mark.parametrize("text", ["shift:9", "shift", "shift:-1", "high", ""])
def test_a_bad_sixteen_bit_rule_is_refused(text):
    with pytest.raises(ValueError, match=r"must be 'shift:N' with N in 0\.\.8 or 'range'"):
        SixteenBitRule(text)
