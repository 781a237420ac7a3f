"""LiveCalibration (ROS-free): camera_info and /tf_static as the node receives them. Messages are
stand-ins with the same field names; tests/ros/test_calibration_topics.py sends real ones."""
from types import SimpleNamespace as Msg

import numpy as np
import pytest

from segmentation_node.calibration import LiveCalibration
from segmentation_node.perception.tracking import ViewGeometry
from tests.cell_recording import LINK_FROM_OPTICAL, WORKCELL_FROM_BASE, _quaternion, camera_poses, intrinsics

WIDTH, HEIGHT = 320, 180


def camera_info(camera, k=None, width=WIDTH, height=HEIGHT, d=(0.0,) * 5, model="plumb_bob"):
    k = intrinsics(WIDTH, HEIGHT) if k is None else k
    return Msg(header=Msg(frame_id=f"{camera}_optical"), k=tuple(np.ravel(k)), d=tuple(d), distortion_model=model,
               width=width, height=height)


def transform(parent, child, pose):
    x, y, z, w = _quaternion(pose[:3, :3])
    t = pose[:3, 3]
    return Msg(header=Msg(frame_id=parent), child_frame_id=child,
               transform=Msg(translation=Msg(x=t[0], y=t[1], z=t[2]), rotation=Msg(x=x, y=y, z=z, w=w)))


def chain(camera):
    """The recording's chain: workcell -> cell_base -> <camera>_link -> <camera>_optical."""
    return [transform("workcell", "cell_base", WORKCELL_FROM_BASE),
            transform("cell_base", f"{camera}_link", camera_poses()[camera]["base_from_link"]),
            transform(f"{camera}_link", f"{camera}_optical", LINK_FROM_OPTICAL)]


def test_geometry_comes_from_camera_info_and_the_static_chain_whichever_arrives_first():
    calibration = LiveCalibration("workcell")
    [(camera, state)] = calibration.camera_info("left", camera_info("left"))
    assert camera == "left" and "no geometry" in state and "no chain of static transforms" in state
    assert calibration.image_size("left") == (HEIGHT, WIDTH), "the size is known before the pose"
    assert calibration.geometry() == {} and calibration.version == 0

    changes = calibration.add_transforms(chain("left"))
    assert changes == [("left", f"{WIDTH}x{HEIGHT}, geometry from camera_info and /tf_static "
                                "(workcell -> left_optical)")]
    assert calibration.version == 1
    geometry = calibration.geometry()["left"]
    np.testing.assert_allclose(geometry.intrinsics, intrinsics(WIDTH, HEIGHT))
    np.testing.assert_allclose(geometry.world_from_camera, camera_poses()["left"]["workcell_from_optical"], atol=1e-9)

    # The right camera's pose arrives first this time (tf_static is latched: usually it does).
    assert calibration.add_transforms(chain("right")) == [], "left is unchanged, right has no camera_info yet"
    calibration.camera_info("right", camera_info("right"))
    assert set(calibration.geometry()) == {"left", "right"} and calibration.version == 2
    assert calibration.problem("left") is None and calibration.problem("right") is None


def test_the_same_camera_info_again_changes_nothing():
    calibration = LiveCalibration("workcell")
    calibration.add_transforms(chain("left"))
    calibration.camera_info("left", camera_info("left"))
    version = calibration.version
    for _ in range(3):
        assert calibration.camera_info("left", camera_info("left")) == []
    assert calibration.version == version


@pytest.mark.parametrize("info, why", [
    (camera_info("left", k=np.zeros((3, 3))), "not calibrated"),
    (camera_info("left", d=(0.1, 0, 0, 0), model="equidistant"), "distortion model 'equidistant'"),
    (camera_info("left", k=np.full((3, 3), np.nan)), "not finite"),
])
def test_an_unusable_calibration_gives_no_geometry_and_says_why(info, why):
    calibration = LiveCalibration("workcell")
    calibration.add_transforms(chain("left"))
    [(_, state)] = calibration.camera_info("left", info)
    assert why in state and "no cross-view identity" in state
    assert calibration.geometry() == {} and calibration.problem("left") is None
    assert calibration.image_size("left") == (HEIGHT, WIDTH)


def test_another_workcell_frame_is_looked_up_along_the_chain():
    calibration = LiveCalibration("cell_base")
    calibration.add_transforms(chain("left"))
    calibration.camera_info("left", camera_info("left"))
    expected = camera_poses()["left"]["base_from_link"] @ LINK_FROM_OPTICAL
    np.testing.assert_allclose(calibration.geometry()["left"].world_from_camera, expected, atol=1e-9)


def commissioned():
    calibration = LiveCalibration("workcell")
    pose = camera_poses()["left"]["workcell_from_optical"]
    calibration.commission({"left": ViewGeometry(intrinsics(WIDTH, HEIGHT), pose)}, {"left": (HEIGHT, WIDTH)})
    return calibration, pose


def test_a_commissioned_camera_keeps_its_calibration_and_camera_info_is_only_checked():
    calibration, pose = commissioned()
    assert calibration.camera_info("left", camera_info("left")) == [("left", "camera_info matches the commissioning")]
    assert calibration.problem("left") is None
    # Calibration files keep a few decimals: small differences are the same calibration.
    assert calibration.camera_info("left", camera_info("left", k=intrinsics(WIDTH, HEIGHT) + 0.3)) == []
    # Another pose in /tf_static does not move the commissioned view (its zone was drawn for it).
    calibration.add_transforms([transform("workcell", "left_optical", np.eye(4))])
    np.testing.assert_allclose(calibration.geometry()["left"].world_from_camera, pose)


@pytest.mark.parametrize("info, why", [
    (camera_info("left", k=intrinsics(WIDTH, HEIGHT) * [[1.01, 1, 1], [1, 1, 1], [1, 1, 1]]),
     "intrinsics differ from the commissioning (fx 288.0 -> 290.9; recommission"),
    (camera_info("left", width=640, height=360), "camera_info says 640x360, the cell was commissioned at 320x180"),
    (camera_info("left", k=np.full((3, 3), np.nan)), "intrinsics differ"),
])
def test_a_commissioned_camera_whose_camera_info_changed_is_a_problem_until_it_matches_again(info, why):
    calibration, _ = commissioned()
    [(camera, state)] = calibration.camera_info("left", info)
    assert camera == "left" and why in state and calibration.problem("left") == state
    assert calibration.image_size("left") == (HEIGHT, WIDTH), "the commissioned size stays the rule"
    assert calibration.camera_info("left", camera_info("left")) == [("left", "camera_info matches the commissioning")]
    assert calibration.problem("left") is None


def test_a_driver_that_lost_its_calibration_file_is_not_a_changed_camera():
    calibration, _ = commissioned()
    calibration.camera_info("left", camera_info("left", k=np.zeros((3, 3))))
    assert calibration.problem("left") is None
