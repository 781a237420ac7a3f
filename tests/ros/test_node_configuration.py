"""Parameter files, validation and the lifecycle of the segmentation node (in-process rclpy)."""
import ast
import importlib.util
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import rclpy
import yaml
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

from segmentation_node.parameters import NODE_PARAMETERS
from segmentation_node.ros.operator_node import OperatorIntentNode
from segmentation_node.ros.segmentation import SegmentationNode
from segmentation_node.synthetic.classical_setup import commission, train_classifier
from segmentation_node.synthetic.scene import ClipConfig, generate_clip
from tests.ros.interface_samples import REPO

PROFILES = sorted((REPO / "config").glob("*.yaml"))
PROFILES = [p for p in PROFILES if p.name != "ontology.yaml"]


@pytest.fixture(scope="module")
def ros():
    rclpy.init()
    yield
    rclpy.try_shutdown()


@pytest.fixture(scope="module")
def commissioning(tmp_path_factory):
    config = ClipConfig(views=3, width=96, height=72, frames=4)
    path = tmp_path_factory.mktemp("cell") / "cell.npz"
    commission(generate_clip(config), train_classifier(replace(config, frames=4), seeds=(1,), frames_per_clip=1)).save(path)
    return path


def parameters_of(profile: Path, node: str) -> list[Parameter]:
    data = yaml.safe_load(profile.read_text())
    return [Parameter(name, value=value) for name, value in data[f"/**/{node}"]["ros__parameters"].items()]


def segmentation(overrides):
    return SegmentationNode(parameter_overrides=[Parameter("autostart", value=False), *overrides])


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_every_profile_sets_only_declared_parameters(ros, profile, tmp_path):
    node = segmentation(parameters_of(profile, "segmentation"))
    try:
        for parameter in parameters_of(profile, "segmentation"):
            assert node.has_parameter(parameter.name), f"{profile.name}: unknown parameter {parameter.name}"
            assert node.get_parameter(parameter.name).value == parameter.value
    finally:
        node.destroy_node()
    operator = OperatorIntentNode(parameter_overrides=[
        *parameters_of(profile, "operator_intent"), Parameter("state_file", value=str(tmp_path / "g.json")),
        Parameter("transition_log", value=str(tmp_path / "g.log"))])
    operator.destroy_node()


def test_cpu_profile_configures_and_activates_with_a_commissioning_file(ros, commissioning):
    node = segmentation([*parameters_of(REPO / "config/cpu.yaml", "segmentation"),
                         Parameter("commissioning_file", value=str(commissioning))])
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    finally:
        node.destroy_node()


def test_declared_parameters_are_the_documented_ones(ros, tmp_path):
    """The nodes declare exactly the table --help and the README print, with its types and ranges."""
    operator = OperatorIntentNode(parameter_overrides=[Parameter("state_file", value=str(tmp_path / "g.json")),
                                                       Parameter("transition_log", value=str(tmp_path / "g.log"))])
    nodes = {"segmentation": segmentation([]), "operator_intent": operator}
    try:
        for name, node in nodes.items():
            specs = NODE_PARAMETERS[name]
            # rclpy declares these two on every node
            declared = set(node._parameters) - {"use_sim_time", "start_type_description_service"}
            assert declared == {spec.name for spec in specs}, name
            for spec, described in zip(specs, node.describe_parameters([spec.name for spec in specs])):
                assert (described.description, described.read_only) == (spec.description, spec.read_only)
                assert [(r.from_value, r.to_value) for r in described.integer_range or
                        described.floating_point_range] == ([spec.integers or spec.floats] if
                                                            spec.integers or spec.floats else [])
    finally:
        for node in nodes.values():
            node.destroy_node()


@pytest.mark.parametrize("module, node", [("segmentation_node.ros.segmentation", "segmentation"),
                                          ("segmentation_node.ros.operator_node", "operator_intent")])
def test_help_lists_every_parameter(module, node):
    shown = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    for spec in NODE_PARAMETERS[node]:
        assert f"\n  {spec.name} " in shown.stdout, spec.name


def test_cameras_are_subscribed_while_active_only(ros, commissioning):
    """An inactive node synchronizes nothing: image, camera_info and /tf_static subscriptions
    come with activate and go with deactivate; the gate is followed from configure on."""
    node = segmentation([Parameter("commissioning_file", value=str(commissioning)),
                         Parameter("transport", value=["compressed", "raw", "raw"])])
    topics = ("/cam_top/image_raw/compressed", "/cam_left/image_raw", "/cam_right/camera_info", "/tf_static")

    def subscribed(expected: int) -> None:
        deadline = time.monotonic() + 20
        while [node.count_subscribers(t) for t in topics] != [expected] * len(topics):
            assert time.monotonic() < deadline, f"{[node.count_subscribers(t) for t in topics]} != {expected}"
            rclpy.spin_once(node, timeout_sec=0.05)

    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        subscribed(0)
        assert node.count_subscribers("/gate_state") == 1
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        subscribed(1)
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        subscribed(0)
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        subscribed(1)
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    finally:
        node.destroy_node()


@pytest.mark.parametrize("overrides", [
    {"backend": "magic"},
    {"transport": ["jpeg"]},
    {"transport": ["raw", "compressed"]},  # neither one for all nor one per camera (3)
    {"sixteen_bit": "shift:12"},
    {"workcell_frame": " "},
    {"cameras": ["cam_top", "cam_top"]},
    {"cameras": ["not a name"]},
    {"backend": "classical", "commissioning_file": ""},
    {"backend": "sam3", "checkpoint": "/nowhere/sam3.pt"},
    {"backend": "sam3_trt", "model_registry": "", "checkpoint": ""},
    {"backend": "classical", "model_registry": "/srv/registry"},
    {"precision": "fp4"},
])
def test_bad_parameters_refuse_configure_and_the_node_stays_up(ros, overrides):
    node = segmentation([Parameter(name, value=value) for name, value in overrides.items()])
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE  # still there, still refusing
    finally:
        node.destroy_node()


def test_camera_missing_from_commissioning_refuses_activate(ros, commissioning):
    node = segmentation([Parameter("cameras", value=["cam_top", "cam_back"]),
                         Parameter("commissioning_file", value=str(commissioning))])
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.FAILURE
    finally:
        node.destroy_node()


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_tensorrt_backend_without_tensorrt_refuses_activate_with_the_reason(ros, tmp_path):
    checkpoint = tmp_path / "sam3.pt"
    checkpoint.write_bytes(b"never loaded: the TensorRT check comes first")
    node = segmentation([Parameter("backend", value="sam3_trt"), Parameter("checkpoint", value=str(checkpoint))])
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        with pytest.raises(RuntimeError, match="TensorRT is not installed"):
            node._build_backend()  # what activate logs when it refuses
        assert node.trigger_activate() == TransitionCallbackReturn.FAILURE
        assert node.trigger_activate() == TransitionCallbackReturn.FAILURE  # still up, still refusing
    finally:
        node.destroy_node()


def test_out_of_range_parameter_is_rejected_by_its_descriptor(ros):
    node = segmentation([])
    try:
        result = node.set_parameters([Parameter("sync_queue_size", value=0)])[0]
        assert not result.successful
    finally:
        node.destroy_node()


def test_launch_file_is_valid_python_and_builds_where_launch_exists():
    source = (REPO / "launch/workcell.launch.py").read_text()
    ast.parse(source)
    if importlib.util.find_spec("launch_ros") is None:
        pytest.skip("launch / launch_ros are not on PyPI: the description is built on robots only")
    spec = importlib.util.spec_from_file_location("workcell_launch", REPO / "launch/workcell.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.generate_launch_description().entities


def test_synchronizer_uses_message_filters_where_installed():
    from segmentation_node.ros.synchronizer import make_synchronizer
    from segmentation_node.sync import ApproximateSync
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    sets = []
    sync = make_synchronizer(2, 5, 0.01, lambda *messages: sets.append(messages))
    if importlib.util.find_spec("message_filters") is None:
        assert isinstance(sync, ApproximateSync)
    stamp = lambda ns: Header(stamp=rclpy.time.Time(nanoseconds=ns).to_msg())  # noqa: E731
    first, second, late = Image(header=stamp(10**9)), Image(header=stamp(10**9 + 5 * 10**6)), Image(header=stamp(2 * 10**9))
    sync.add(0, 10**9, first)
    sync.add(1, 2 * 10**9, late)
    assert sets == []
    sync.add(1, 10**9 + 5 * 10**6, second)
    assert sets == [(first, second)]


CONVERTERS = ["numpy view"] + (["cv_bridge"] if importlib.util.find_spec("cv_bridge") else [])


@pytest.mark.parametrize("converter", CONVERTERS)
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "nv12"])
def test_image_conversion_on_every_encoding(converter, encoding):
    """The node's converter (cv_bridge on robots, the numpy view here) on real sensor_msgs/Image."""
    import numpy as np
    from sensor_msgs.msg import Image

    from segmentation_node.image_codec import ImageError, to_rgb
    from segmentation_node.ros.image_conversion import _cv_bridge_converter

    convert = to_rgb if converter == "numpy view" else _cv_bridge_converter()
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    pixels = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "rgba8": np.dstack([rgb, np.zeros((2, 3), np.uint8)]),
              "bgra8": np.dstack([rgb[..., ::-1], np.zeros((2, 3), np.uint8)]), "mono8": rgb[..., 0],
              "nv12": rgb[..., :2]}[encoding]
    pixels = np.ascontiguousarray(pixels)
    message = Image(height=2, width=3, encoding=encoding, step=pixels.strides[0], data=pixels.tobytes())
    if encoding == "nv12":
        with pytest.raises(ImageError, match="unsupported encoding"):
            convert(message)
        return
    expected = np.repeat(rgb[..., :1], 3, axis=2) if encoding == "mono8" else rgb
    assert np.array_equal(convert(message), expected)


def test_both_nodes_start_without_pycocotools():
    """rosdep cannot install pycocotools: the nodes must import without it (only COCO writers
    need it, and the node refuses flywheel_dir without it)."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['pycocotools'] = None; "
            "import segmentation_node.ros.segmentation, segmentation_node.ros.operator_node")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
