"""The ROS-free mirror of the interface constants (segmentation_node.contract) matches msg/."""
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from ament_index_python.packages import get_package_share_directory

from segmentation_node import contract

ENTRY_POINTS = Path(contract.__file__).with_name("entry_points.txt")


@pytest.mark.parametrize("message_and_prefix", sorted(contract.MIRRORED_CONSTANTS))
def test_mirrored_constants_equal_generated(message_and_prefix):
    message_name, prefix = message_and_prefix
    message_class = getattr(importlib.import_module("workcell_segmentation.msg"), message_name)
    generated = {name[len(prefix):]: getattr(message_class, name)
                 for name in dir(message_class) if name.startswith(prefix) and name.isupper()}
    mirrored = {member.name: member.value for member in contract.MIRRORED_CONSTANTS[message_and_prefix]}
    assert generated == mirrored


def test_every_contract_type_exists():
    for item in contract.ENDPOINTS:
        package, kind, name = item.type.split("/")
        module = importlib.import_module(f"{package}.{kind}")
        assert hasattr(module, name), item.type


def test_colcon_install_has_share_and_an_executable_per_entry_point():
    """What `ros2 launch` and `ros2 run workcell_segmentation <name>` rely on on a robot."""
    share = Path(get_package_share_directory(contract.PACKAGE))
    for installed in ("package.xml", "launch", "config", "models"):
        assert (share / installed).exists(), installed
    prefix = share.parents[1]
    names = [line.split("=")[0].strip() for line in ENTRY_POINTS.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert names
    for name in names:
        launcher = prefix / "lib" / contract.PACKAGE / name
        result = subprocess.run([sys.executable, str(launcher), "--help"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert "usage:" in result.stdout
