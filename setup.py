"""pip install of the Python side of workcell_segmentation.

On a robot, colcon builds the ROS package (CMakeLists.txt: interfaces + this Python package).
This file serves everyone else: offline tools and training workstations install the ROS-free
core with pip, without ROS. Heavy dependencies are extras so the base install stays small.
"""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def console_scripts():
    lines = (HERE / "segmentation_node" / "entry_points.txt").read_text().splitlines()
    entries = [line.split("#", 1)[0].strip() for line in lines]
    return [entry for entry in entries if entry]


setup(
    name="workcell-segmentation",
    version="0.1.0",
    description="Multi-view SAM3 segmentation, safety gate and data flywheel for a robotic pick workcell",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",  # Humble (Ubuntu 22.04) ships Python 3.10
    packages=find_packages(include=["segmentation_node", "segmentation_node.*"]),
    package_data={"segmentation_node": ["entry_points.txt"]},
    install_requires=[
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "pycocotools>=2.0.7",
        "pyyaml>=6.0",
        "tqdm>=4.66",
    ],
    extras_require={
        # SAM3 backend, fine-tuning and export. Pin torch/torchvision as a matching pair for
        # your platform in the same pip command (sam3 declares neither).
        "sam3": ["sam3==0.1.4", "torch>=2.7", "torchvision>=0.22", "open-clip-torch>=2.24", "psutil",
                 "torchmetrics", "scipy"],
        # Static ONNX export of SAM3's stages and the onnxruntime parity check (TensorRT comes
        # with JetPack / the NVIDIA wheels of the target, not from here).
        "export": ["onnx", "onnxscript", "onnxruntime"],
        # rosbag2 files without a ROS install (synthetic bags, offline replay).
        "bags": ["rosbags>=0.11.9"],
        "dev": ["pytest>=8", "pytest-timeout>=2.3", "rosbags>=0.11.9"],
    },
    entry_points={"console_scripts": console_scripts()},
)
