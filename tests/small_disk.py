"""A folder on its own tiny tmpfs: how tests make a disk fill up or turn read-only for real."""
from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

IS_ROOT = os.geteuid() == 0


@contextmanager
def small_disk(path: Path, size: str = "64k"):
    """Mount a `size` tmpfs on `path` for the block; skips the test where mounting needs root
    (CI and this machine run as root)."""
    if not IS_ROOT:
        pytest.skip("mounting a small tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)
