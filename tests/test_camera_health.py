"""Camera health without ROS: stamps, staleness, rate, sticky BAD_INPUT and BLIND (issue 13)."""
import pytest

from segmentation_node.camera_health import CameraHealth
from segmentation_node.contract import CameraStatus

MS = 1_000_000
NOW_NS = 1_700_000_000 * 10**9  # the node's clock; camera stamps are close to it


class Camera:
    """Feeds one CameraHealth like a 10 Hz camera: stamps and arrivals advance 100 ms per image."""

    def __init__(self, health: CameraHealth):
        self.health, self.index = health, 0

    @property
    def now_s(self) -> float:
        return 10.0 + 0.1 * self.index

    def send(self, format_problem=None, stamp_ns=None):
        self.index += 1
        stamp_ns = NOW_NS + self.index * 100 * MS if stamp_ns is None else stamp_ns
        return self.health.accept(stamp_ns, self.now_s, NOW_NS + self.index * 100 * MS, format_problem)

    def status(self):
        return self.health.status(self.now_s)


@pytest.fixture
def camera():
    return Camera(CameraHealth("cam_left", stale_after_s=0.5))


def test_missing_ok_stale_and_rate():
    health = CameraHealth("cam_left", stale_after_s=0.5)
    assert health.status(0.0) == (CameraStatus.MISSING, "no image received yet")
    assert health.rate_hz(0.0) == 0.0
    for i in range(11):
        assert health.accept(NOW_NS + 100 * i * MS, 10.0 + 0.1 * i, NOW_NS + 100 * i * MS) is None
    assert health.rate_hz(11.0) == pytest.approx(10.0)
    assert health.status(11.1) == (CameraStatus.OK, "")
    status, detail = health.status(12.0)
    assert status is CameraStatus.STALE and detail == "no image for 1.0 s (limit 0.5 s)"
    assert health.rate_hz(20.0) == 0.0  # nothing within the window any more
    assert health.accept(NOW_NS + 5000 * MS, 20.0, NOW_NS + 5000 * MS) is None
    assert health.status(20.1)[0] is CameraStatus.OK


def test_bad_input_is_sticky_until_enough_consecutive_good_images(camera):
    assert camera.send() is None
    assert camera.send("unsupported encoding 'yuv422'") == "unsupported encoding 'yuv422'"
    assert camera.status() == (CameraStatus.BAD_INPUT, "unsupported encoding 'yuv422' (3 more good images needed)")
    assert camera.send() is None
    assert camera.status() == (CameraStatus.BAD_INPUT, "unsupported encoding 'yuv422' (2 more good images needed)")
    assert camera.send() is None
    assert camera.status()[1].endswith("(1 more good image needed)")
    assert camera.send() is None
    assert camera.status() == (CameraStatus.OK, "")


def test_a_camera_alternating_bad_and_good_images_never_looks_ok(camera):
    for _ in range(10):
        camera.send("image is 640x480, this camera is calibrated for 1280x720")
        camera.send()
        assert camera.status()[0] is CameraStatus.BAD_INPUT


def test_a_rejection_during_recovery_restarts_the_count(camera):
    camera.send("encoding 16UC1")
    camera.send()
    camera.send()
    assert "stamp went back" in camera.send(stamp_ns=NOW_NS)  # out of order, mid-recovery
    assert camera.status()[1].startswith("stamp went back")  # the last reason is shown
    camera.send()
    camera.send()
    assert camera.status()[0] is CameraStatus.BAD_INPUT
    camera.send()
    assert camera.status()[0] is CameraStatus.OK


def test_worker_rejection_is_bad_input_and_restarts_recovery(camera):
    camera.send()
    camera.health.reject("cv_bridge cannot convert the image")
    assert camera.status() == (CameraStatus.BAD_INPUT, "cv_bridge cannot convert the image (3 more good images needed)")
    camera.send()
    camera.send()
    camera.health.reject("cv_bridge cannot convert the image")
    camera.send()
    camera.send()
    assert camera.status()[0] is CameraStatus.BAD_INPUT
    camera.send()
    assert camera.status()[0] is CameraStatus.OK


def test_out_of_order_and_repeated_stamps_are_rejected(camera):
    camera.send(stamp_ns=NOW_NS + 500 * MS)
    assert camera.send(stamp_ns=NOW_NS + 450 * MS) == "stamp went back 50.0 ms (out of order or repeated)"
    assert camera.send(stamp_ns=NOW_NS + 500 * MS) == "stamp went back 0.0 ms (out of order or repeated)"
    assert camera.send(stamp_ns=NOW_NS + 501 * MS) is None  # newer than the last accepted one


def test_a_future_stamp_is_rejected_and_does_not_poison_later_images(camera):
    camera.send()
    wild = (2**31 - 1) * 10**9  # sec = 2^31 - 1
    problem = camera.send(stamp_ns=wild)
    assert problem.startswith("stamp is ") and "s ahead of this node's clock (limit 1.00 s)" in problem
    assert camera.status()[0] is CameraStatus.BAD_INPUT
    for _ in range(3):
        assert camera.send() is None  # real stamps, all far below the wild one
    assert camera.status() == (CameraStatus.OK, "")


def test_a_stamp_slightly_ahead_of_the_node_clock_is_accepted():
    health = CameraHealth("cam_left", stale_after_s=0.5, max_future_stamp_s=0.2)
    assert health.accept(NOW_NS + 150 * MS, 10.0, NOW_NS) is None  # clocks 150 ms apart: fine
    assert "ahead" in health.accept(NOW_NS + 450 * MS, 10.1, NOW_NS + 100 * MS)  # 350 ms ahead


def test_bad_images_are_arrivals_not_staleness(camera):
    for _ in range(11):
        camera.send("unsupported encoding '16UC1'")
    status, detail = camera.status()
    assert status is CameraStatus.BAD_INPUT and "no image for" not in detail
    assert camera.health.rate_hz(camera.now_s) == pytest.approx(10.0)


def test_a_problem_outlives_staleness_and_says_so(camera):
    camera.send("unsupported encoding 'yuv422'")
    status, detail = camera.health.status(camera.now_s + 2.0)
    assert status is CameraStatus.BAD_INPUT
    assert detail == "unsupported encoding 'yuv422' (3 more good images needed); no image for 2.0 s (limit 0.5 s)"


def test_blind_has_hysteresis(camera):
    camera.send()
    camera.health.report_view("image is black: 100% of pixels at or below 10")
    assert camera.status() == (CameraStatus.BLIND, "image is black: 100% of pixels at or below 10 "
                                                   "(3 more clear views needed)")
    camera.health.report_view(None)
    camera.health.report_view(None)
    camera.health.report_view("image is near-constant")  # restarts the count
    camera.health.report_view(None)
    camera.health.report_view(None)
    assert camera.status() == (CameraStatus.BLIND, "image is near-constant (1 more clear view needed)")
    camera.health.report_view(None)
    assert camera.status() == (CameraStatus.OK, "")


def test_bad_input_comes_before_blind_and_blind_before_stale(camera):
    camera.send()
    camera.health.report_view("image is saturated")
    camera.send("unsupported encoding 'yuv422'")
    assert camera.status()[0] is CameraStatus.BAD_INPUT
    for _ in range(3):
        camera.send()
    assert camera.status()[0] is CameraStatus.BLIND  # good images do not clear what the view showed
    status, detail = camera.health.status(camera.now_s + 1.0)
    assert status is CameraStatus.BLIND and detail.endswith("; no image for 1.0 s (limit 0.5 s)")


def test_blind_without_images_is_still_blind_and_missing_is_said():
    health = CameraHealth("cam_left", stale_after_s=0.5)
    health.report_view("image is black")
    assert health.status(0.0) == (CameraStatus.BLIND, "image is black (3 more clear views needed); "
                                                      "no image received yet")


def test_good_images_to_recover_of_one_recovers_at_once():
    health = CameraHealth("cam_left", stale_after_s=0.5, good_images_to_recover=1)
    health.accept(NOW_NS, 10.0, NOW_NS, "unsupported encoding 'yuv422'")
    assert health.status(10.0)[1] == "unsupported encoding 'yuv422' (1 more good image needed)"
    health.accept(NOW_NS + 1, 10.1, NOW_NS)
    assert health.status(10.1) == (CameraStatus.OK, "")


@pytest.mark.parametrize("kwargs, message", [
    (dict(name=""), "non-empty string"),
    (dict(stale_after_s=0.0), "stale_after_s must be a positive number"),
    (dict(stale_after_s=float("nan")), "stale_after_s"),
    (dict(window_s=-1.0), "window_s must be a positive number"),
    (dict(max_future_stamp_s=-0.1), "max_future_stamp_s must be a number of seconds >= 0"),
    (dict(max_future_stamp_s=float("inf")), "max_future_stamp_s"),
    (dict(good_images_to_recover=0), "good_images_to_recover must be an integer >= 1"),
    (dict(good_images_to_recover=2.5), "good_images_to_recover"),
    (dict(good_images_to_recover=True), "good_images_to_recover"),
])
def test_bad_settings_are_clear_errors(kwargs, message):
    arguments = dict(name="cam_left", stale_after_s=0.5) | kwargs
    with pytest.raises(ValueError, match=message):
        CameraHealth(**arguments)
