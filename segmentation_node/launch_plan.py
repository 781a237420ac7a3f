"""What launch/workcell.launch.py does with its arguments, ROS-free so it is tested where the
launch packages are not installed: the argument table, the segmentation node's parameter
overrides (a given argument wins over the profile, an empty one leaves the profile's value) and
its remappings onto the camera drivers (only the topics each camera's transport subscribes)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from segmentation_node.backends import BACKENDS, PRECISIONS
from segmentation_node.image_codec import TRANSPORT_TOPICS, TRANSPORTS, per_camera_transports
from segmentation_node.parameters import SEGMENTATION_PARAMETERS

PROFILES = ("cpu", "orin", "thor")


@dataclass(frozen=True)
class LaunchArgument:
    name: str
    default: str
    description: str
    choices: tuple[str, ...] = ()


LAUNCH_ARGUMENTS: tuple[LaunchArgument, ...] = (
    LaunchArgument("profile", "cpu", "parameter profile: config/<profile>.yaml", PROFILES),
    LaunchArgument("config_file", "", "parameter file instead of the profile's"),
    LaunchArgument("namespace", "workcell", "namespace of both nodes"),
    LaunchArgument("camera_prefix", "", "namespace of the camera drivers"),
    LaunchArgument("cameras", "", "comma-separated camera names (empty: the profile's)"),
    LaunchArgument("transport", "", f"{' | '.join(TRANSPORTS)}, once for every camera or once per camera, "
                                    "comma-separated (empty: the profile's)"),
    LaunchArgument("backend", "", f"{' | '.join(BACKENDS)} (empty: the profile's)"),
    LaunchArgument("checkpoint", "", "SAM3 checkpoint file (backends sam3, sam3_trt)"),
    LaunchArgument("model_registry", "", "model registry directory: serves its promoted version"),
    LaunchArgument("model_version", "", "registry version to start with (empty: the promoted one)"),
    LaunchArgument("precision", "", f"backend sam3_trt: {' | '.join(PRECISIONS)} (empty: the profile's)"),
    LaunchArgument("commissioning_file", "", "calibration, backgrounds, zones (workcell_commission)"),
    LaunchArgument("workcell_frame", "", "without commissioning_file: the /tf_static frame of camera poses"),
    LaunchArgument("autostart", "true", "true: the node configures and activates itself; false: this launch "
                                        "file drives its transitions (configure on start, activate once "
                                        "configured)", ("true", "false")),
)
# Arguments that are segmentation node parameters of the same name (strings as given).
PARAMETER_ARGUMENTS = ("backend", "checkpoint", "model_registry", "model_version", "precision",
                       "commissioning_file", "workcell_frame")
_DECLARED = {spec.name: spec for spec in SEGMENTATION_PARAMETERS}


def profile_parameters(path: Path, node: str = "segmentation") -> dict:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    return (data.get(f"/**/{node}") or {}).get("ros__parameters") or {}


def _names(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def segmentation_plan(values: dict[str, str], profile: dict) -> tuple[dict, list[tuple[str, str]]]:
    """(parameter overrides, remappings) of the segmentation node from the launch arguments'
    values and its profile parameters. ValueError for a value the node would refuse anyway."""
    overrides: dict = {name: values[name] for name in PARAMETER_ARGUMENTS if values.get(name)}
    cameras = _names(values.get("cameras", "")) or list(profile.get("cameras") or _DECLARED["cameras"].default)
    overrides["cameras"] = cameras
    transports = _names(values.get("transport", "")) or list(profile.get("transport") or _DECLARED["transport"].default)
    if values.get("transport"):
        overrides["transport"] = transports
    per_camera = per_camera_transports(transports, cameras)
    autostart = values.get("autostart", "true").lower()
    if autostart not in ("true", "false"):
        raise ValueError(f"autostart must be true or false; got '{values['autostart']}'")
    overrides["autostart"] = autostart == "true"
    prefix = values.get("camera_prefix", "").rstrip("/")
    # The node subscribes relative names inside its namespace: point each at its driver.
    remappings = []
    for camera, transport in zip(cameras, per_camera):
        image = TRANSPORT_TOPICS[transport]
        remappings += [(f"{camera}/{topic}", f"{prefix}/{camera}/{topic}") for topic in (image, "camera_info")]
    return overrides, remappings


def render_markdown_table() -> str:
    rows = ["| argument | default | what |", "|---|---|---|"]
    for argument in LAUNCH_ARGUMENTS:
        choices = f" ({' / '.join(argument.choices)})" if argument.choices else ""
        what = f"{argument.description}{choices}".replace("|", "\\|")  # a pipe would end the cell
        rows.append(f"| `{argument.name}` | `{argument.default or chr(34) * 2}` | {what} |")
    return "\n".join(rows) + "\n"
