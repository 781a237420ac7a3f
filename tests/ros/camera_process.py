"""Cameras as their own process, the way drivers run beside the node: publishes the frame sets
saved in FRAMES (npz: "<index>/<camera>" -> rgb8 array) stamped now at RATE Hz until killed.

    python -m tests.ros.camera_process FRAMES RATE
"""
import sys

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from segmentation_node.ros.messages import stamp_of


def main() -> None:
    frames_file, rate_hz = sys.argv[1], float(sys.argv[2])
    with np.load(frames_file) as saved:
        frames: dict[int, dict[str, np.ndarray]] = {}
        for key in saved.files:
            index, camera = key.split("/")
            frames.setdefault(int(index), {})[camera] = saved[key]
    sets = [frames[index] for index in sorted(frames)]
    rclpy.init()
    node = Node("camera_driver")
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    publishers = {camera: node.create_publisher(Image, f"{camera}/image_raw", qos) for camera in sets[0]}
    count = [0]

    def send() -> None:
        stamp = stamp_of(node.get_clock().now().nanoseconds)
        for camera, array in sets[count[0] % len(sets)].items():
            publishers[camera].publish(Image(
                header=Header(stamp=stamp, frame_id=f"{camera}_optical_frame"), height=array.shape[0],
                width=array.shape[1], encoding="rgb8", step=array.shape[1] * 3, data=array.tobytes()))
        count[0] += 1

    node.create_timer(1.0 / rate_hz, send)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
