"""Tests that need real ROS 2 (rclpy, DDS, the built interfaces).

scripts/test sets WORKCELL_REQUIRE_ROS=1: there a missing ROS install is a failure, not a skip.
A plain pip install without ROS skips these with the reason.
"""
import importlib
import os

import pytest

REQUIRED = os.environ.get("WORKCELL_REQUIRE_ROS") == "1"


def _import_or_skip(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        if REQUIRED:
            raise
        pytest.skip(f"needs ROS 2 ({module}: {error}); run scripts/test", allow_module_level=True)


_import_or_skip("rclpy")
_import_or_skip("workcell_segmentation.msg")


def pytest_sessionfinish(session, exitstatus):
    """Tests kill nodes with SIGKILL on purpose; each leaves its Fast DDS shared-memory segment
    (~70 MB with config/fastdds.xml) in /dev/shm. Remove the segments nobody holds any more."""
    removed = remove_orphaned_shm_segments()
    if removed:
        print(f"\nremoved {removed} Fast DDS shared-memory segment(s) left by killed processes")


def remove_orphaned_shm_segments(folder: str = "/dev/shm") -> int:
    """A live Fast DDS participant keeps an exclusive lock on its segment's `<segment>_el` file:
    a segment whose lock file can be locked belongs to a dead process."""
    import fcntl
    from pathlib import Path

    removed = 0
    for lock_file in Path(folder).glob("fastdds_*_el"):
        if lock_file.name.startswith("fastdds_port"):
            continue  # ports are small and Fast DDS reuses them
        try:
            with open(lock_file, "rb") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # held: its process is alive (or the file just went)
        Path(folder, lock_file.name[:-len("_el")]).unlink(missing_ok=True)
        lock_file.unlink(missing_ok=True)
        removed += 1
    return removed
