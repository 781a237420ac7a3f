"""Both nodes of the workcell in one namespace, cameras remapped onto their driver topics.

    ros2 launch workcell_segmentation workcell.launch.py profile:=orin \
        cameras:=cam_top,cam_left,cam_right camera_prefix:=/cameras \
        commissioning_file:=/etc/workcell/cell.npz

Arguments (`ros2 launch ... --show-args`; the table is segmentation_node/launch_plan.py):
profile, config_file, namespace, camera_prefix, cameras, transport, backend, checkpoint,
model_registry, model_version, precision, commissioning_file, workcell_frame, autostart. An
empty argument leaves the profile's value. autostart:=false: this file drives the segmentation
node's lifecycle (configure on start, activate once configured) instead of the node itself.
operator_intent is respawned if it dies (the gate comes back PAUSED from its state file).

Fast DDS: the nodes get config/fastdds.xml (shared memory sized for 720p images, README
"Transport") unless FASTDDS_DEFAULT_PROFILES_FILE / FASTRTPS_DEFAULT_PROFILES_FILE is already set.
Camera drivers started elsewhere need the same profile: the sender's segment is what matters.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler, SetEnvironmentVariable
from launch.events import matches_action
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

from segmentation_node.launch_plan import LAUNCH_ARGUMENTS, profile_parameters, segmentation_plan

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
    values = {argument.name: LaunchConfiguration(argument.name).perform(context) for argument in LAUNCH_ARGUMENTS}
    share = get_package_share_directory(PACKAGE)
    config = values["config_file"] or os.path.join(share, "config", f"{values['profile']}.yaml")
    overrides, remappings = segmentation_plan(values, profile_parameters(config))
    segmentation = LifecycleNode(package=PACKAGE, executable="segmentation", name="segmentation",
                                 namespace=values["namespace"], parameters=[config, overrides],
                                 remappings=remappings, output="screen")
    actions = [segmentation,
               Node(package=PACKAGE, executable="operator_intent", name="operator_intent",
                    namespace=values["namespace"], parameters=[config], output="screen",
                    respawn=True, respawn_delay=1.0)]
    if not overrides["autostart"]:
        def change(transition: int) -> EmitEvent:
            return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(segmentation),
                                               transition_id=transition))

        # Only configuring -> inactive: an operator's later deactivate must stay deactivated.
        actions += [RegisterEventHandler(OnStateTransition(target_lifecycle_node=segmentation,
                                                           start_state="configuring", goal_state="inactive",
                                                           entities=[change(Transition.TRANSITION_ACTIVATE)])),
                    change(Transition.TRANSITION_CONFIGURE)]
    return actions


def generate_launch_description():
    return LaunchDescription([
        *_fastdds_profile(),
        *[DeclareLaunchArgument(argument.name, default_value=argument.default, description=argument.description,
                                **({"choices": list(argument.choices)} if argument.choices else {}))
          for argument in LAUNCH_ARGUMENTS],
        OpaqueFunction(function=_nodes),
    ])
