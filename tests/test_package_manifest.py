"""package.xml resolves with rosdep on Humble, Jazzy and Kilted: every dependency is a ROS
package released in all three or a rosdep key (offline copies in tests/data/rosdep)."""
import ast
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LISTS = REPO / "tests" / "data" / "rosdep"
DEPENDENCY_TAGS = ("depend", "build_depend", "buildtool_depend", "exec_depend", "test_depend",
                   "build_export_depend")


def _names(path: Path) -> set[str]:
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def test_every_dependency_resolves_with_rosdep():
    manifest = ElementTree.parse(REPO / "package.xml").getroot()
    declared = {element.text.strip() for tag in DEPENDENCY_TAGS for element in manifest.iter(tag)}
    known = _names(LISTS / "ros-packages-humble-jazzy-kilted.txt") | _names(LISTS / "rosdep-keys.txt")
    assert declared, "package.xml declares no dependencies"
    assert sorted(declared - known) == [], "not a released ROS package nor a rosdep key"


def test_python_imports_of_the_package_are_declared():
    """Third-party modules the package imports map to a declared key, or are on the documented
    pip-only list (not rosdep keys)."""

    key_of = {"numpy": "python3-numpy", "cv2": "python3-opencv", "yaml": "python3-yaml", "tqdm": "python3-tqdm",
              "rosbags": "python3-rosbags-pip", "rclpy": "rclpy", "rcl_interfaces": "rcl_interfaces",
              "ament_index_python": "ament_index_python", "lifecycle_msgs": "lifecycle_msgs",
              "diagnostic_msgs": "diagnostic_msgs", "message_filters": "message_filters", "cv_bridge": "cv_bridge",
              "launch": "launch", "launch_ros": "launch_ros", "sensor_msgs": "sensor_msgs", "std_msgs": "std_msgs",
              "builtin_interfaces": "builtin_interfaces", "tf2_msgs": "tf2_msgs"}
    pip_only = {"pycocotools", "sam3", "torch", "torchvision", "tensorrt", "onnx", "onnxruntime",
                "workcell_segmentation"}  # the last: this package's own generated interfaces
    manifest = ElementTree.parse(REPO / "package.xml").getroot()
    declared = {element.text.strip() for tag in DEPENDENCY_TAGS for element in manifest.iter(tag)}
    imported = set()
    for source in (REPO / "segmentation_node").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {name for name in imported if name not in sys.stdlib_module_names and name != "segmentation_node"}
    unknown = sorted(third_party - set(key_of) - pip_only)
    assert unknown == [], f"imported but neither declared nor documented as pip-only: {unknown}"
    assert sorted(key_of[name] for name in third_party & set(key_of) if key_of[name] not in declared) == []
