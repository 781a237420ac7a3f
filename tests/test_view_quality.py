"""View quality on the synthetic cell: a camera that cannot see the cell is told apart from a
busy, dim or partly covered one (issue 13). Thresholds and their evidence: view_quality.py."""
import cv2
import numpy as np
import pytest

from segmentation_node.perception.view_quality import ViewQualityCheck
from segmentation_node.synthetic.classical_setup import empty_cell_backgrounds
from segmentation_node.synthetic.render import render_frame_set
from segmentation_node.synthetic.scene import SKIN, ClipConfig, generate_clip

CELL = ClipConfig(seed=7, views=3, width=320, height=240, frames=20)
PARTS, HAND, DIMMED = 0, 10, 17  # frame 10: the hand is over the bin; from frame 12 the lights are at 0.78


@pytest.fixture(scope="module")
def cell():
    clip = generate_clip(CELL)
    backgrounds = empty_cell_backgrounds(clip)
    medians = [backgrounds[camera.name].median for camera in clip.cameras]
    frames = {index: [view.image for view in render_frame_set(clip, index)] for index in (PARTS, HAND, DIMMED)}
    return [ViewQualityCheck(median) for median in medians], frames, medians


def gain(image, factor):
    return np.clip(image.astype(np.float32) * factor, 0, 255).astype(np.uint8)


def moved(image, dx, dy=0.0, degrees=0.0):
    """The image a camera sees after being shifted by dx, dy (fractions of the frame) and turned."""
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    matrix[:, 2] += (dx * width, dy * height)
    return cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)


def skin_blob(image, center, area=0.4):
    """A shaded skin-coloured ellipse covering `area` of the frame: an arm close to the camera."""
    height, width = image.shape[:2]
    rows, columns = np.mgrid[0:height, 0:width]
    for radius in np.linspace(0.1, 1.5, 300):
        mask = ((columns / width - center[0]) / radius) ** 2 + ((rows / height - center[1]) / radius) ** 2 < 1
        if mask.mean() >= area:
            break
    skin = np.array(SKIN.color) * 255 * (0.6 + 0.4 * rows / height)[..., None]
    return np.where(mask[..., None], skin, image).astype(np.uint8), mask.mean()


def test_normal_views_can_see(cell):
    checks, frames, _ = cell
    for index, images in frames.items():  # parts, the hand over the bin, dimmed lights
        for check, image in zip(checks, images):
            assert check.check(image) is None, (index, check.measure(image))
            assert ViewQualityCheck().check(image) is None


@pytest.mark.parametrize("factor", [0.5, 0.78, 1.3])
def test_a_global_lighting_gain_is_not_blindness(cell, factor):
    checks, frames, _ = cell
    for check, image in zip(checks, frames[PARTS]):
        assert check.check(gain(image, factor)) is None, check.measure(gain(image, factor))


@pytest.mark.parametrize("center", [(1.0, 0.5), (0.0, 0.5), (0.5, 1.0), (0.8, 0.5), (0.0, 0.0)])
def test_a_hand_filling_40_percent_of_the_frame_is_an_intrusion_not_blindness(cell, center):
    checks, frames, _ = cell
    for check, image in zip(checks, frames[PARTS]):
        covered, area = skin_blob(image, center)
        assert area == pytest.approx(0.4, abs=0.01)
        assert check.check(covered) is None, check.measure(covered)


@pytest.mark.parametrize("make, reason", [
    (lambda image: np.zeros_like(image), "image is black: 100% of pixels at or below 10"),
    (lambda image: np.full_like(image, 255), "image is saturated: 100% of pixels at or above 245"),
    (lambda image: np.full_like(image, 128), "image is near-constant: contrast 0 levels"),
    (lambda image: np.clip(np.random.default_rng(1).normal(128, 3, image.shape), 0, 255).astype(np.uint8),
     "image is near-constant"),
    (lambda image: gain(image, 0.08), "image is near-constant"),  # lights off
    (lambda image: gain(image, 3.0), "image is saturated"),  # heavy over-exposure
])
def test_an_image_that_shows_nothing_is_blind_with_or_without_a_background(cell, make, reason):
    checks, frames, _ = cell
    for check, image in zip(checks, frames[PARTS]):
        assert check.check(make(image)).startswith(reason)
        assert ViewQualityCheck().check(make(image)).startswith(reason)


@pytest.mark.parametrize("dx, dy, degrees", [(0.1, 0.0, 0.0), (-0.25, 0.0, 0.0), (0.0, 0.15, 0.0), (0.1, -0.1, 0.0),
                                             (0.0, 0.0, 20.0)])
def test_a_moved_camera_is_blind(cell, dx, dy, degrees):
    checks, frames, _ = cell
    for check, image in zip(checks, frames[PARTS]):
        reason = check.check(moved(image, dx, dy, degrees))
        assert reason is not None and reason.startswith("view does not match the commissioned empty cell")
        assert ViewQualityCheck().check(moved(image, dx, dy, degrees)) is None  # only the background can tell


def test_another_cameras_viewpoint_or_a_covered_lens_is_blind(cell):
    checks, frames, _ = cell
    images = frames[PARTS]
    for index, check in enumerate(checks):
        assert "commissioned empty cell" in check.check(images[(index + 1) % len(images)])
        assert "commissioned empty cell" in check.check(skin_blob(images[index], (0.5, 0.5), area=1.0)[0])


def test_large_images_are_reduced_the_same_way(cell):
    """640x480 takes the every-other-row path of the downsampling."""
    _, frames, medians = cell
    check = ViewQualityCheck(cv2.resize(medians[0], (640, 480), interpolation=cv2.INTER_LINEAR))
    image = cv2.resize(frames[PARTS][0], (640, 480), interpolation=cv2.INTER_LINEAR)
    assert check.check(image) is None
    assert "commissioned empty cell" in check.check(moved(image, 0.1))


def test_a_strided_view_of_the_message_buffer_is_checked_like_a_copy(cell):
    checks, frames, _ = cell
    image = frames[PARTS][0]
    padded = np.zeros((image.shape[0], image.shape[1] + 5, 3), np.uint8)  # a step with padding
    padded[:, :image.shape[1]] = image
    assert checks[0].measure(padded[:, :image.shape[1]]) == checks[0].measure(image)


def test_unusable_inputs_are_clear_errors(cell):
    checks, frames, _ = cell
    with pytest.raises(ValueError, match="does not match the background"):
        checks[0].check(frames[PARTS][0][:100])
    with pytest.raises(ValueError, match="uint8 RGB"):
        checks[0].check(frames[PARTS][0].astype(np.float32))
    with pytest.raises(ValueError, match="too featureless"):
        ViewQualityCheck(np.full((240, 320, 3), 128.0, np.float32))
    with pytest.raises(ValueError, match="H x W x 3"):
        ViewQualityCheck(np.zeros((240, 320), np.float32))
