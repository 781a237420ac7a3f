"""Deterministic synthetic multi-view workcell: scenes, ground truth, COCO and rosbag2 export.
ROS-free (bags are written with the pure-Python `rosbags`)."""
