"""The wire contract in plain Python: interface constants, topics, services and their QoS.

The constants mirror msg/*.msg so that the ROS-free core can speak in roles, gate states and
reason codes without importing generated messages (tests/ros check that both agree). The
endpoint table is the single place topic names and QoS are decided: the nodes build their
publishers from it, and the README's interface table is rendered from it (`workcell_contract`).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from enum import Enum, IntEnum

PACKAGE = "workcell_segmentation"


class Role(IntEnum):
    """InstanceMask.ROLE_*: what the grasp planner must do with an instance."""

    UNKNOWN = 0
    TARGET = 1
    FORBIDDEN = 2
    IGNORE = 3


class Source(IntEnum):
    """InstanceMask.SOURCE_*: which perception channel produced an instance."""

    MODEL = 0
    INTRUSION = 1


# Labels of the intrusion monitor's regions (Source.INTRUSION). One that reaches into the pick
# zone from outside it always stops the cell for approval, whatever the ontology says: something unknown is
# where the robot works. One wholly outside the zone is a keep-out region only (a tool left
# beside the bin must not stop the cell for good).
INTRUSION_LABEL = "unknown_object"
PICK_ZONE_INTRUSION_LABEL = "unknown_object_in_pick_zone"


class CameraStatus(IntEnum):
    """ViewResult.CAMERA_*."""

    OK = 0
    STALE = 1
    MISSING = 2
    BAD_INPUT = 3
    BLIND = 4


class Reason(IntEnum):
    """FrameSetResult.REASON_*: why a frame set is not actionable."""

    GATE_NOT_RUNNING = 1
    CAMERA_NOT_FRESH = 2
    NO_TARGET = 3
    LOW_CONFIDENCE = 4
    UNSTABLE = 5
    FORBIDDEN_NEAR_TARGET = 6
    AUTO_PAUSE_CLASS = 7
    MODEL_ERROR = 8
    NO_INTENT = 9
    GATE_LOST = 10
    DECISION_STALE = 11
    CAMERA_BLIND = 12


class GateState(IntEnum):
    """GateState.STATE_*. Only RUNNING lets a result be actionable."""

    UNKNOWN = 0
    PAUSED = 1
    AWAITING_APPROVAL = 2
    FAULT = 3
    RUNNING = 4


class Command(IntEnum):
    """OperatorCommand.COMMAND_*."""

    NONE = 0
    PAUSE = 1
    RESUME = 2
    APPROVE = 3


class HardCaseKind(IntEnum):
    """HardCaseReport.KIND_*."""

    UNKNOWN = 0
    MISPICK = 1
    OPERATOR_REJECT = 2


# Message field prefix of each mirrored constant group, for the consistency check.
MIRRORED_CONSTANTS = {
    ("InstanceMask", "ROLE_"): Role,
    ("InstanceMask", "SOURCE_"): Source,
    ("ViewResult", "CAMERA_"): CameraStatus,
    ("FrameSetResult", "REASON_"): Reason,
    ("GateState", "STATE_"): GateState,
    ("OperatorCommand", "COMMAND_"): Command,
    ("HardCaseReport", "KIND_"): HardCaseKind,
}


class Reliability(str, Enum):
    RELIABLE = "reliable"
    BEST_EFFORT = "best_effort"


class Durability(str, Enum):
    VOLATILE = "volatile"
    TRANSIENT_LOCAL = "transient_local"


@dataclass(frozen=True)
class QosSpec:
    """A QoS choice (keep-last history), independent of rclpy so it can be documented and tested."""

    name: str
    reliability: Reliability
    durability: Durability
    depth: int
    why: str

    def describe(self) -> str:
        latched = ", transient local" if self.durability is Durability.TRANSIENT_LOCAL else ""
        return f"{self.reliability.value.replace('_', ' ')}{latched}, depth {self.depth}"


SENSOR = QosSpec("sensor", Reliability.BEST_EFFORT, Durability.VOLATILE, 5,
                 "cameras: a late frame is worth less than the next one")
RESULT = QosSpec("result", Reliability.RELIABLE, Durability.VOLATILE, 10,
                 "decisions the planner acts on must not be dropped silently")
MASK_IMAGE = QosSpec("mask_image", Reliability.RELIABLE, Durability.VOLATILE, 2,
                     "per-view masks pair with the frame-set result; shallow: they are large")
PREVIEW = QosSpec("preview", Reliability.BEST_EFFORT, Durability.VOLATILE, 1,
                  "for people watching in rqt_image_view; never worth back-pressure")
LATCHED = QosSpec("latched", Reliability.RELIABLE, Durability.TRANSIENT_LOCAL, 1,
                  "state: a subscriber that starts late still gets the current value")
STATIC_TRANSFORMS = QosSpec("static_transforms", Reliability.RELIABLE, Durability.TRANSIENT_LOCAL, 100,
                            "as tf2's static listener: every broadcaster's latched transforms, whenever it started")
OPERATOR_INPUT = QosSpec("operator_input", Reliability.RELIABLE, Durability.VOLATILE, 10,
                         "operator requests must arrive, and only once")


class Kind(str, Enum):
    SUBSCRIBES = "sub"
    PUBLISHES = "pub"
    SERVES = "srv"


@dataclass(frozen=True)
class Endpoint:
    """One topic or service of a node. `{camera}` stands for each configured camera name."""

    node: str
    kind: Kind
    name: str
    type: str
    qos: QosSpec | None
    what: str


SEGMENTATION_NODE = "segmentation"
OPERATOR_NODE = "operator_intent"

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(SEGMENTATION_NODE, Kind.SUBSCRIBES, "{camera}/image_raw", "sensor_msgs/msg/Image", SENSOR,
             "camera images (RGB, mono 8/16 bit, YUV 4:2:2, Bayer: README, Camera encodings and transports), "
             "synchronized by approximate time"),
    Endpoint(SEGMENTATION_NODE, Kind.SUBSCRIBES, "{camera}/image_raw/compressed", "sensor_msgs/msg/CompressedImage",
             SENSOR, "instead of image_raw where transport is compressed: JPEG or PNG, decoded off the callbacks"),
    Endpoint(SEGMENTATION_NODE, Kind.SUBSCRIBES, "{camera}/camera_info", "sensor_msgs/msg/CameraInfo", SENSOR,
             "checked against the commissioning (another size or K: that camera's images are bad input); "
             "without one: the image size, and intrinsics for cross-view identity"),
    Endpoint(SEGMENTATION_NODE, Kind.SUBSCRIBES, "/tf_static", "tf2_msgs/msg/TFMessage", STATIC_TRANSFORMS,
             "without a commissioning file: each camera's pose, the chain from workcell_frame to its optical frame"),
    Endpoint(SEGMENTATION_NODE, Kind.SUBSCRIBES, "active_intent", f"{PACKAGE}/msg/ActiveIntent", LATCHED,
             "the intent in force: which classes are targets"),
    Endpoint(SEGMENTATION_NODE, Kind.SUBSCRIBES, "gate_state", f"{PACKAGE}/msg/GateState", LATCHED,
             "safety gate; nothing is actionable unless RUNNING, heard within gate_timeout_s, from gate_node"),
    Endpoint(SEGMENTATION_NODE, Kind.SUBSCRIBES, "hard_case_report", f"{PACKAGE}/msg/HardCaseReport", OPERATOR_INPUT,
             "mis-pick / operator-reject reports: the frames around them are saved as a hard case"),
    Endpoint(SEGMENTATION_NODE, Kind.SERVES, "swap_model", f"{PACKAGE}/srv/SwapModel", None,
             "load a registry model version (or roll back) between frame sets; gate and intent kept"),
    Endpoint(SEGMENTATION_NODE, Kind.PUBLISHES, "frame_set", f"{PACKAGE}/msg/FrameSetResult", RESULT,
             "all views' instances, the actionable verdict and its reasons"),
    Endpoint(SEGMENTATION_NODE, Kind.PUBLISHES, "{camera}/target_labels", "sensor_msgs/msg/Image", MASK_IMAGE,
             "mono16 label image of targets (pixel = InstanceMask.label_value), source header"),
    Endpoint(SEGMENTATION_NODE, Kind.PUBLISHES, "{camera}/forbidden_mask", "sensor_msgs/msg/Image", MASK_IMAGE,
             "mono8 union of forbidden and intrusion regions (255 = keep out), source header"),
    Endpoint(SEGMENTATION_NODE, Kind.PUBLISHES, "{camera}/overlay", "sensor_msgs/msg/Image", PREVIEW,
             "rgb8 image with masks, ids and verdict drawn, for rqt_image_view"),
    Endpoint(SEGMENTATION_NODE, Kind.PUBLISHES, "/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", RESULT,
             "camera rates and staleness, latency, model, gate"),
    Endpoint(OPERATOR_NODE, Kind.SUBSCRIBES, "intent", f"{PACKAGE}/msg/OperatorIntent", OPERATOR_INPUT,
             "intent text from rqt_publisher or scripts"),
    Endpoint(OPERATOR_NODE, Kind.SUBSCRIBES, "command", f"{PACKAGE}/msg/OperatorCommand", OPERATOR_INPUT,
             "pause / resume / approve from rqt_publisher or scripts"),
    Endpoint(OPERATOR_NODE, Kind.SUBSCRIBES, "frame_set", f"{PACKAGE}/msg/FrameSetResult", RESULT,
             "auto-pause classes and faults that move the gate"),
    Endpoint(OPERATOR_NODE, Kind.PUBLISHES, "active_intent", f"{PACKAGE}/msg/ActiveIntent", LATCHED,
             "the resolved intent in force"),
    Endpoint(OPERATOR_NODE, Kind.PUBLISHES, "gate_state", f"{PACKAGE}/msg/GateState", LATCHED,
             "every gate transition, with operator id and reason; unchanged every heartbeat_period_s"),
    Endpoint(OPERATOR_NODE, Kind.PUBLISHES, "/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", RESULT,
             "gate state, epoch and whether its state can be persisted"),
    Endpoint(OPERATOR_NODE, Kind.SERVES, "set_intent", f"{PACKAGE}/srv/SetIntent", None,
             "set intent; answers accepted / rejected, reason, suggestions"),
    Endpoint(OPERATOR_NODE, Kind.SERVES, "gate_command", f"{PACKAGE}/srv/GateCommand", None,
             "pause / resume / approve; answers accepted / rejected, reason, new state"),
)


def endpoint(node: str, name: str) -> Endpoint:
    """The contract entry for `name` of `node`; KeyError if the contract has no such endpoint."""
    for candidate in ENDPOINTS:
        if candidate.node == node and candidate.name == name:
            return candidate
    raise KeyError(f"{node} has no endpoint {name!r} in the contract")


def render_markdown_table() -> str:
    rows = ["| node | kind | name | type | QoS | what |", "|---|---|---|---|---|---|"]
    for item in ENDPOINTS:
        qos = item.qos.describe() if item.qos else "service"
        rows.append(f"| {item.node} | {item.kind.value} | `{item.name}` | `{item.type}` | {qos} | {item.what} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    # Here, not at the top: the parameter table names this module's node names.
    from segmentation_node.parameters import NODE_PARAMETERS, render_markdown_table as render_parameter_table

    parser = argparse.ArgumentParser(
        prog="workcell_contract",
        description="Print the topics, services and QoS of workcell_segmentation's nodes.")
    parser.add_argument("--qos", action="store_true", help="also list the QoS profiles and why each was chosen")
    parser.add_argument("--parameters", choices=sorted(NODE_PARAMETERS),
                        help="print that node's parameter table instead (README, Parameters)")
    args = parser.parse_args(argv)
    if args.parameters:
        print(render_parameter_table(NODE_PARAMETERS[args.parameters]), end="")
        return 0
    print(render_markdown_table(), end="")
    if args.qos:
        print()
        for spec in (SENSOR, RESULT, MASK_IMAGE, PREVIEW, LATCHED, STATIC_TRANSFORMS, OPERATOR_INPUT):
            print(f"- {spec.name}: {spec.describe()} — {spec.why}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
