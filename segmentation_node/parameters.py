"""Every ROS parameter of the two nodes, in one ROS-free table: the nodes declare theirs from it
(with descriptors: type, range, read-only, description), `--help` prints it and the README's
parameter tables are rendered from it (`workcell_contract --parameters`; a test keeps them equal)."""
from __future__ import annotations

from dataclasses import dataclass

from segmentation_node.backends import BACKENDS, PRECISIONS
from segmentation_node.contract import OPERATOR_NODE
from segmentation_node.image_codec import TRANSPORTS
from segmentation_node.sync import DEFAULT_QUEUE_SIZE, DEFAULT_SLOP_S


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    default: object  # its Python type is the parameter's type (a list: string array)
    description: str
    integers: tuple[int, int] | None = None  # inclusive range
    floats: tuple[float, float] | None = None
    read_only: bool = False

    @property
    def type_name(self) -> str:
        return {bool: "bool", int: "integer", float: "double", str: "string", list: "string[]"}[type(self.default)]

    def describe_range(self) -> str:
        bounds = self.integers or self.floats
        return f"{bounds[0]:g} .. {bounds[1]:g}" if bounds else ""


SEGMENTATION_PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("cameras", ["cam_top", "cam_left", "cam_right"],
                  "camera names; each subscribes <name>/image_raw (remap in launch)"),
    ParameterSpec("transport", ["raw"], f"{' or '.join(TRANSPORTS)}: one for every camera, or one per camera in "
                                        "cameras' order; compressed subscribes <name>/image_raw/compressed"),
    ParameterSpec("sixteen_bit", "shift:8", "16-bit images to 8 bits: shift:N (keep bits N..N+7; 8 = high byte, "
                                            "4 = 12-bit sensors) or range (per frame, darkest to brightest)"),
    ParameterSpec("sync_slop_s", DEFAULT_SLOP_S, "largest stamp spread within one frame set", floats=(0.0001, 1.0)),
    ParameterSpec("sync_queue_size", DEFAULT_QUEUE_SIZE, "images kept per camera while waiting for a set",
                  integers=(1, 100)),
    ParameterSpec("stale_after_s", 0.5, "a camera without images for longer is stale", floats=(0.01, 60.0)),
    ParameterSpec("backend", "classical", f"segmentation backend: {', '.join(BACKENDS)}"),
    ParameterSpec("checkpoint", "", "SAM3 checkpoint path (backend sam3); never downloaded"),
    ParameterSpec("commissioning_file", "",
                  "calibration, empty-cell backgrounds, zones, colour table (workcell_commission)"),
    ParameterSpec("workcell_frame", "workcell", "without commissioning_file: the /tf_static frame camera poses are "
                                                "taken in (z up, parts resting near z = 0)"),
    ParameterSpec("ontology_file", "", "ontology YAML; empty: the package's config/ontology.yaml"),
    ParameterSpec("keyframe_interval", 5, "full detection every N frame sets; tracking in between",
                  integers=(1, 1000)),
    ParameterSpec("clearance_px", 8, "targets closer than this to a forbidden region are not pickable",
                  integers=(0, 200)),
    ParameterSpec("worker_queue", 2, "frame sets waiting for the model; the oldest is dropped", integers=(1, 10)),
    ParameterSpec("publish_masks", True, "per-view mono16 target label and mono8 forbidden mask images"),
    ParameterSpec("publish_overlay", False, "per-view rgb8 overlay for rqt_image_view (costs CPU)"),
    ParameterSpec("engine_cache", "~/.cache/workcell_segmentation/engines",
                  "backend sam3_trt: ONNX exports and TensorRT engines, rebuilt only when model, shapes, "
                  "precision, GPU or TensorRT change"),
    ParameterSpec("precision", "fp16", f"backend sam3_trt: {', '.join(PRECISIONS)}"),
    ParameterSpec("image_size", 0, "SAM3 backends: square model input in px, a multiple of 14; 0: the "
                  "model's own (1008). Smaller is faster (workcell_sizing); accuracy is the release gate's "
                  "to judge", integers=(0, 4032)),
    ParameterSpec("max_objects", 16, "SAM3 backends: tracked objects per view, forbidden regions first "
                  "(a target only when every forbidden region fits); tracker work grows with it",
                  integers=(1, 256)),
    ParameterSpec("calibration_images", "", "backend sam3_trt, precision int8 or fp8: a folder of recorded frames to calibrate on"),
    ParameterSpec("model_registry", "", "model registry directory (backend sam3): serves its promoted version; "
                                        "swap_model loads others (workcell_registry)"),
    ParameterSpec("model_version", "", "registry version to start with; empty: the promoted one"),
    ParameterSpec("flywheel_dir", "", "where pseudo-label and hard-case COCO shards go; empty: no data logging"),
    ParameterSpec("flywheel_max_gb", 20.0, "disk budget of the shards; oldest pseudo-labels are deleted first",
                  floats=(0.001, 100000.0)),
    ParameterSpec("flywheel_min_score", 0.8, "pseudo-labels: lowest model score", floats=(0.0, 1.0)),
    ParameterSpec("flywheel_stable_frames", 3, "pseudo-labels: frame sets a track must keep its label",
                  integers=(1, 1000)),
    ParameterSpec("flywheel_every_n", 10, "pseudo-labels: at most one frame set in N", integers=(1, 100000)),
    ParameterSpec("flywheel_clip_frames", 5, "hard cases: frame sets kept before and after the event",
                  integers=(0, 100)),
    ParameterSpec("flywheel_frame_sets_per_shard", 50, "pseudo-label frame sets per shard", integers=(1, 100000)),
    ParameterSpec("gate_node", OPERATOR_NODE, "the node whose gate_state is trusted (relative: in this node's "
                                                  "namespace); gate_state from any other node makes nothing "
                                                  "actionable", read_only=True),
    ParameterSpec("gate_timeout_s", 2.0, "a gate not heard from for longer is lost: nothing is actionable (the "
                                         "gate republishes every heartbeat_period_s)", floats=(0.1, 60.0)),
    ParameterSpec("good_images_to_recover", 3, "a camera that sent a bad image (or showed a blind view) stays so "
                                               "until this many good ones in a row", integers=(1, 1000)),
    ParameterSpec("max_future_stamp_s", 1.0, "images stamped further ahead of this node's clock are bad input",
                  floats=(0.0, 3600.0)),
    ParameterSpec("autostart", True, "configure and activate at start-up without a lifecycle manager",
                  read_only=True),
)

OPERATOR_PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("ontology_file", "", "ontology YAML; empty: the package's config/ontology.yaml", read_only=True),
    ParameterSpec("state_file", "~/.ros/workcell_segmentation/gate.json", "where the gate state survives restarts",
                  read_only=True),
    ParameterSpec("transition_log", "~/.ros/workcell_segmentation/gate_transitions.jsonl",
                  "append-only log of every gate transition", read_only=True),
    # [""] rather than []: an empty list has no type in every rclpy; blank entries are dropped.
    ParameterSpec("allowed_operators", [""], "operator ids allowed to RESUME / APPROVE; empty: nobody. A restart "
                                             "changes it, and every start records it in the transition log",
                  read_only=True),
    ParameterSpec("initial_intent", "", "intent in force at start-up; empty: none", read_only=True),
    ParameterSpec("heartbeat_period_s", 0.5, "the unchanged gate state is republished this often; subscribers "
                                             "treat a silent gate as lost", floats=(0.05, 10.0), read_only=True),
)

NODE_PARAMETERS = {"segmentation": SEGMENTATION_PARAMETERS, "operator_intent": OPERATOR_PARAMETERS}


def _default_text(spec: ParameterSpec) -> str:
    if isinstance(spec.default, list):
        return "[" + ", ".join(spec.default) + "]"
    if isinstance(spec.default, bool):
        return str(spec.default).lower()
    return f"{spec.default}" if spec.default != "" else '""'


def render_markdown_table(specs: tuple[ParameterSpec, ...]) -> str:
    rows = ["| parameter | type | default | range | what |", "|---|---|---|---|---|"]
    for spec in specs:
        what = spec.description + (" (read-only)" if spec.read_only else "")
        rows.append(f"| `{spec.name}` | {spec.type_name} | `{_default_text(spec)}` | {spec.describe_range()} "
                    f"| {what} |")
    return "\n".join(rows) + "\n"


def render_help(specs: tuple[ParameterSpec, ...]) -> str:
    """The parameter list for `--help` (set with --ros-args -p name:=value)."""
    width = max(len(spec.name) for spec in specs)
    lines = ["parameters (--ros-args -p name:=value):"]
    for spec in specs:
        bounds = f", {spec.describe_range()}" if spec.describe_range() else ""
        read_only = ", read-only" if spec.read_only else ""
        lines.append(f"  {spec.name:<{width}}  {spec.type_name} = {_default_text(spec)}{bounds}{read_only}")
        lines.append(f"  {'':<{width}}  {spec.description}")
    return "\n".join(lines)
