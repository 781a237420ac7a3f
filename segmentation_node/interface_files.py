"""Where the package's .msg definitions live, for tools that handle our types without rclpy
(rosbags reads and writes bags from the definitions alone)."""
from __future__ import annotations

from pathlib import Path

from segmentation_node.contract import PACKAGE

_CHECKOUT_MSG_DIR = Path(__file__).resolve().parents[1] / "msg"


def msg_dir() -> Path:
    """The installed share/<package>/msg of a ROS install, else the checkout's msg/."""
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory(PACKAGE)) / "msg"
        if installed.is_dir():
            return installed
    except (ImportError, LookupError):
        pass
    if _CHECKOUT_MSG_DIR.is_dir():
        return _CHECKOUT_MSG_DIR
    raise FileNotFoundError(
        f"no {PACKAGE} message definitions found: run from a checkout or source a ROS install of the package")


def message_definitions() -> dict[str, str]:
    """Full type name (e.g. 'workcell_segmentation/msg/MaskRLE') -> .msg text."""
    return {f"{PACKAGE}/msg/{path.stem}": path.read_text() for path in sorted(msg_dir().glob("*.msg"))}
