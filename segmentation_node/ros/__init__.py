"""The ROS 2 boundary: thin node classes over the ROS-free core. Everything here needs rclpy."""
