"""The ROS-free perception core: ontology and intent, backends, tracking, roles, actionability,
metrics. Unit-tested without rclpy."""
