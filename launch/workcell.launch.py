"""Both nodes of the workcell in one namespace, cameras remapped onto their driver topics.

    ros2 launch workcell_segmentation workcell.launch.py profile:=orin \
        cameras:=cam_top,cam_left,cam_right camera_prefix:=/cameras \
        commissioning_file:=/etc/workcell/cell.npz

Arguments: profile (cpu | orin | thor: picks config/<profile>.yaml), config_file (overrides the
profile's file), cameras, camera_prefix (where the drivers publish <camera>/image_raw),
backend, checkpoint, commissioning_file, transport (raw | compressed, once or per camera,
comma-separated), workcell_frame, namespace.

Fast DDS: the nodes get config/fastdds.xml (shared memory sized for 720p images, README
"Transport") unless FASTDDS_DEFAULT_PROFILES_FILE / FASTRTPS_DEFAULT_PROFILES_FILE is already set.
Camera drivers started elsewhere need the same profile: the sender's segment is what matters.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

PACKAGE = "workcell_segmentation"
FASTDDS_PROFILE = "FASTDDS_DEFAULT_PROFILES_FILE"  # read by Fast DDS 3.x (Kilted and later)
FASTRTPS_PROFILE = "FASTRTPS_DEFAULT_PROFILES_FILE"  # read by Fast DDS 2.x
FAST_DDS_2_DISTROS = ("foxy", "galactic", "humble", "iron", "jazzy")


def _fastdds_profile():
    """Point the nodes' Fast DDS at the installed profile, keeping a value the user exported.

    Each variable defaults to the other one, then to the package's file. The Fast DDS 2 name is
    set only on distros that ship Fast DDS 2: Kilted's rmw_fastrtps warns about it in every node.
    """
    profile = os.path.join(get_package_share_directory(PACKAGE), "config", "fastdds.xml")
    actions = [SetEnvironmentVariable(FASTDDS_PROFILE, EnvironmentVariable(
        FASTDDS_PROFILE, default_value=[EnvironmentVariable(FASTRTPS_PROFILE, default_value=profile)]))]
    if os.environ.get("ROS_DISTRO") in FAST_DDS_2_DISTROS:
        actions.append(SetEnvironmentVariable(FASTRTPS_PROFILE, EnvironmentVariable(
            FASTRTPS_PROFILE, default_value=[EnvironmentVariable(FASTDDS_PROFILE, default_value=profile)])))
    return actions


def _nodes(context):
    value = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    share = get_package_share_directory(PACKAGE)
    config = value("config_file") or os.path.join(share, "config", f"{value('profile')}.yaml")
    cameras = [c.strip() for c in value("cameras").split(",") if c.strip()]
    prefix = value("camera_prefix").rstrip("/")
    overrides = {"cameras": cameras}
    for name in ("backend", "checkpoint", "commissioning_file", "workcell_frame"):
        if value(name):
            overrides[name] = value(name)
    if value("transport"):
        overrides["transport"] = [t.strip() for t in value("transport").split(",")]
    # The node subscribes relative <camera>/image_raw (or its compressed stream) and camera_info
    # inside the namespace: point each at its driver.
    remappings = [(f"{camera}/{topic}", f"{prefix}/{camera}/{topic}")
                  for camera in cameras for topic in ("image_raw", "image_raw/compressed", "camera_info")]
    namespace = value("namespace")
    return [
        LifecycleNode(package=PACKAGE, executable="segmentation", name="segmentation", namespace=namespace,
                      parameters=[config, overrides], remappings=remappings, output="screen"),
        Node(package=PACKAGE, executable="operator_intent", name="operator_intent", namespace=namespace,
             parameters=[config], output="screen"),
    ]


def generate_launch_description():
    return LaunchDescription([
        *_fastdds_profile(),
        DeclareLaunchArgument("profile", default_value="cpu", choices=["cpu", "orin", "thor"],
                              description="parameter profile: config/<profile>.yaml"),
        DeclareLaunchArgument("config_file", default_value="", description="parameter file instead of the profile's"),
        DeclareLaunchArgument("cameras", default_value="cam_top,cam_left,cam_right",
                              description="comma-separated camera names"),
        DeclareLaunchArgument("camera_prefix", default_value="", description="namespace of the camera drivers"),
        DeclareLaunchArgument("backend", default_value="", description="classical | sam3 | sam3_small (profile's)"),
        DeclareLaunchArgument("checkpoint", default_value="", description="SAM3 checkpoint file (backend sam3)"),
        DeclareLaunchArgument("commissioning_file", default_value="",
                              description="calibration, backgrounds, zones (workcell_commission)"),
        DeclareLaunchArgument("transport", default_value="",
                              description="raw | compressed: once for every camera or once per camera (profile's)"),
        DeclareLaunchArgument("workcell_frame", default_value="",
                              description="without commissioning_file: the /tf_static frame of camera poses"),
        DeclareLaunchArgument("namespace", default_value="workcell", description="namespace of both nodes"),
        OpaqueFunction(function=_nodes),
    ])
