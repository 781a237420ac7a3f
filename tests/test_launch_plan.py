"""The launch file's decisions (segmentation_node/launch_plan.py), ROS-free: launch and
launch_ros are not on PyPI, so the file itself is only built on robots
(tests/ros/test_node_configuration.py); here its arguments are checked against the nodes'
declared parameters, the contract's topics and the README."""
import ast
import re
from pathlib import Path

import pytest

from segmentation_node.contract import ENDPOINTS, SEGMENTATION_NODE, Kind
from segmentation_node.launch_plan import (LAUNCH_ARGUMENTS, PARAMETER_ARGUMENTS, PROFILES, profile_parameters,
                                           render_markdown_table, segmentation_plan)
from segmentation_node.parameters import SEGMENTATION_PARAMETERS

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
ARGUMENTS = {argument.name for argument in LAUNCH_ARGUMENTS}
DECLARED = {spec.name for spec in SEGMENTATION_PARAMETERS}


def defaults(**given):
    return {**{argument.name: argument.default for argument in LAUNCH_ARGUMENTS}, **given}


@pytest.mark.parametrize("profile", PROFILES)
def test_cameras_come_from_the_profile_unless_given(profile):
    parameters = profile_parameters(REPO / "config" / f"{profile}.yaml")
    overrides, _ = segmentation_plan(defaults(profile=profile), parameters)
    assert overrides["cameras"] == parameters["cameras"]
    assert segmentation_plan(defaults(cameras="left, right"), parameters)[0]["cameras"] == ["left", "right"]


def test_an_empty_argument_leaves_the_profile_value_and_a_given_one_wins():
    overrides, _ = segmentation_plan(defaults(), {"backend": "sam3_trt", "precision": "fp16"})
    assert "backend" not in overrides and "precision" not in overrides and "transport" not in overrides
    overrides, _ = segmentation_plan(defaults(backend="sam3", model_registry="/srv/models", precision="int8",
                                              transport="compressed", autostart="false"), {})
    assert overrides["backend"] == "sam3" and overrides["model_registry"] == "/srv/models"
    assert overrides["precision"] == "int8" and overrides["transport"] == ["compressed"]
    assert overrides["autostart"] is False


def test_remaps_only_what_each_cameras_transport_subscribes():
    subscribed = {e.name for e in ENDPOINTS if e.node == SEGMENTATION_NODE and e.kind is Kind.SUBSCRIBES}
    _, remappings = segmentation_plan(defaults(cameras="top,left", transport="compressed,raw",
                                               camera_prefix="/cameras/"), {})
    assert remappings == [("top/image_raw/compressed", "/cameras/top/image_raw/compressed"),
                          ("top/camera_info", "/cameras/top/camera_info"),
                          ("left/image_raw", "/cameras/left/image_raw"),
                          ("left/camera_info", "/cameras/left/camera_info")]
    for source, _ in remappings:  # no dead remaps: every one is a topic the node subscribes
        camera, topic = source.split("/", 1)
        assert f"{{camera}}/{topic}" in subscribed


@pytest.mark.parametrize("given, why", [
    ({"transport": "raw,compressed"}, "once or once per camera (3)"),
    ({"transport": "ffmpeg"}, "transport must be raw or compressed"),
    ({"autostart": "yes"}, "autostart must be true or false"),
])
def test_values_the_node_would_refuse_fail_the_launch_with_the_reason(given, why):
    with pytest.raises(ValueError, match=re.escape(why)):
        segmentation_plan(defaults(**given), {"cameras": ["a", "b", "c"]})


def test_every_argument_that_sets_a_parameter_names_a_declared_one():
    assert set(PARAMETER_ARGUMENTS) | {"cameras", "transport", "autostart"} <= DECLARED
    assert set(PARAMETER_ARGUMENTS) <= ARGUMENTS
    launch_only = ARGUMENTS - DECLARED
    assert launch_only == {"profile", "config_file", "namespace", "camera_prefix"}


def test_the_launch_file_declares_exactly_the_table():
    tree = ast.parse((REPO / "launch" / "workcell.launch.py").read_text())
    literal_arguments = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
                         and getattr(node.func, "id", "") == "DeclareLaunchArgument"
                         and node.args and isinstance(node.args[0], ast.Constant)]
    assert literal_arguments == [], "declare arguments from launch_plan.LAUNCH_ARGUMENTS only"


def test_readme_launch_table_is_the_rendered_one_and_its_commands_use_declared_arguments():
    begin, end = "<!-- launch:begin -->\n", "<!-- launch:end -->"
    assert README.split(begin, 1)[1].split(end, 1)[0] == render_markdown_table()
    commands = re.findall(r"ros2 launch workcell_segmentation workcell\.launch\.py((?:[^\n]|\\\n)*)", README)
    assert commands
    used = {name for command in commands for name in re.findall(r"(\w+):=", command)}
    assert used and used <= ARGUMENTS, sorted(used - ARGUMENTS)
