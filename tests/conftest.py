"""Test-wide settings. DDS traffic stays on this machine, on a domain of this run's own."""
import os

# Chosen before anything imports rclpy, and inherited by every process a test starts, so two
# test runs on one machine (or a developer's nodes) never cross-talk. Kilted reads
# ROS_AUTOMATIC_DISCOVERY_RANGE; older distros ROS_LOCALHOST_ONLY.
os.environ["ROS_DOMAIN_ID"] = os.environ.get("WORKCELL_TEST_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_LOCALHOST_ONLY"] = "1"
