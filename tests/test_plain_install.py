"""The Python package installs with plain pip on a machine without ROS (offline tools, training
workstations), and the ROS-free core imports there."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROS_VARIABLES = ("PYTHONPATH", "LD_LIBRARY_PATH", "AMENT_PREFIX_PATH", "VIRTUAL_ENV", "CMAKE_PREFIX_PATH")


def test_pip_install_without_ros(tmp_path):
    # Only what a source distribution carries, so nothing of the ROS build can leak in.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.py", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "segmentation_node", source / "segmentation_node",
                    ignore=shutil.ignore_patterns("__pycache__"))

    env = {key: value for key, value in os.environ.items() if key not in ROS_VARIABLES}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep)
                                  if not p.startswith(str(REPO)))
    venv = tmp_path / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True, env=env)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(source)],
                   check=True, env=env, cwd=tmp_path)

    probe = (
        "import importlib.util, segmentation_node, segmentation_node.contract as c;"
        "assert importlib.util.find_spec('rclpy') is None, 'rclpy must not be here';"
        "assert 'site-packages' in segmentation_node.__file__, segmentation_node.__file__;"
        "print(c.Role.TARGET.value)"
    )
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"

    tool = subprocess.run([str(venv / "bin" / "workcell_contract")], capture_output=True, text=True,
                          env=env, cwd=tmp_path)
    assert tool.returncode == 0, tool.stderr
    assert "`frame_set`" in tool.stdout
