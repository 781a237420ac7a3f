"""workcell_segmentation's Python package.

The top level and every module not under `segmentation_node.ros` is ROS-free: it imports
without rclpy, so offline tools and training machines can `pip install` it without ROS.
"""

__version__ = "0.1.0"
