"""Files the package installs to share/ (message definitions, config)."""
from __future__ import annotations

from pathlib import Path

from segmentation_node.contract import PACKAGE

_CHECKOUT = Path(__file__).resolve().parents[1]


def share_path(relative: str) -> Path:
    """<checkout>/<relative> when this module runs from a checkout (edits apply without a
    rebuild), else share/<package>/<relative> of the ROS install found by the ament index."""
    if (_CHECKOUT / "package.xml").is_file() and (_CHECKOUT / relative).exists():
        return _CHECKOUT / relative
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory(PACKAGE)) / relative
        if installed.exists():
            return installed
    except (ImportError, LookupError):
        pass
    raise FileNotFoundError(
        f"{PACKAGE} file '{relative}' not found: run from a checkout or source a ROS install of the package")


def message_definitions() -> dict[str, str]:
    """Full type name (e.g. 'workcell_segmentation/msg/MaskRLE') -> .msg text."""
    return {f"{PACKAGE}/msg/{path.stem}": path.read_text() for path in sorted(share_path("msg").glob("*.msg"))}
