"""segmentation node (lifecycle): synchronized camera views in, per-view masks and one
actionability verdict out.

configure: validates parameters, loads the ontology; publishers, the gate and intent
           subscriptions (state: the first results after activate are decided with them).
activate:  builds the backend (model / engines), starts the worker, subscribes the cameras
           (images, camera_info, /tf_static) and hard-case reports.
deactivate: unsubscribes those (an inactive node synchronizes nothing), stops the worker and
           frees the backend. cleanup: tears down the rest.

Subscription callbacks only convert stamps, check stamp order and hand complete frame sets to
a worker through a drop-oldest queue: inference never runs in a callback and never delays gate
or intent messages. A watchdog publishes a not-actionable result when no frame set arrives.

One thread spins every callback (a single-threaded executor): they are all short, and each
camera's images are handled in the order they came. rclpy's MultiThreadedExecutor (Kilted)
submits a queued callback again on every spin while its thread pool is busy; here that loop grew
to 2,600 pending submissions and held the GIL for 0.6-1.3 s at a time (image callbacks that
late, stamps handled out of order). Loading a model for swap_model holds the callbacks up
meanwhile; camera freshness is judged on the middleware's reception times, so nothing looks
stale, and the gate heard too long ago makes results not actionable until it is heard again.
"""
from __future__ import annotations

import importlib.util
import re
import sys
import threading
import time
from collections import deque
from dataclasses import replace
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from segmentation_node.backends import BackendSpec
from segmentation_node.calibration import LiveCalibration
from segmentation_node.camera_health import CameraHealth
from segmentation_node.contract import SEGMENTATION_NODE, CameraStatus, HardCaseKind, Role
from segmentation_node.flywheel.hard_cases import MIS_PICK, OPERATOR_REJECT, HardCasePolicy
from segmentation_node.flywheel.logger import FlywheelLogger, FlywheelPolicy
from segmentation_node.flywheel.pseudo_labels import PseudoLabelPolicy
from segmentation_node.gate import printable
from segmentation_node.gate_monitor import GateMonitor
from segmentation_node.image_codec import ImageError, SixteenBitRule, per_camera_transports
from segmentation_node.masks import label_image
from segmentation_node.overlay import OverlayItem, draw_overlay
from segmentation_node.perception.actionability import ActionabilityConfig, Conditions, Verdict, decide
from segmentation_node.perception.commissioning import Commissioning
from segmentation_node.perception.intent import IntentError, resolve_intent
from segmentation_node.perception.ontology import OntologyError, load_ontology
from segmentation_node.perception.pipeline import FrameSetOutcome, KeyframeScheduler, PerceptionPipeline
from segmentation_node.perception.types import CameraFrame
from segmentation_node.perception.view_quality import ViewQualityCheck
from segmentation_node.registry import ModelRegistry, load_registered_model
from segmentation_node.result_publisher import ResultPublisher
from segmentation_node.ros.contained import contained
from segmentation_node.parameters import SEGMENTATION_PARAMETERS
from segmentation_node.ros.image_conversion import camera_input
from segmentation_node.ros.message_info import Arrived, received_ns, subscribe_with_info
from segmentation_node.ros.messages import endpoint_qos, image_message, instance_message, nanoseconds, stamp_of
from segmentation_node.ros.parameters import declare
from segmentation_node.ros.runner import run_node
from segmentation_node.ros.synchronizer import make_synchronizer
from segmentation_node.stage_timer import StageTimer
from workcell_segmentation.msg import ActiveIntent, FrameSetResult, GateState, HardCaseReport, ViewResult
from workcell_segmentation.srv import SwapModel

_CAMERA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NODE_NAME = re.compile(r"^/?([A-Za-z_][A-Za-z0-9_]*/)*[A-Za-z_][A-Za-z0-9_]*$")
_HARD_CASE_KINDS = {HardCaseKind.MISPICK: MIS_PICK, HardCaseKind.OPERATOR_REJECT: OPERATOR_REJECT}


class SegmentationNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__(SEGMENTATION_NODE, **kwargs)
        declare(self, SEGMENTATION_PARAMETERS)
        self._lock = threading.Lock()  # the worker queue and the pending intent
        self._queue: deque = deque()
        self._wake = threading.Condition(self._lock)
        self._worker: threading.Thread | None = None
        self._running = False
        self._pipeline: PerceptionPipeline | None = None
        self._stages = StageTimer()
        self._process_lock = threading.Lock()  # held for one frame set; a model swap waits for it
        self._flywheel: FlywheelLogger | None = None
        self._registry_version = ""
        self._version_before_swap = ""
        self._io = []
        self._inputs_io = []  # camera-side subscriptions, while active
        if self.get_parameter("autostart").value:
            self._autostart_timer = self.create_timer(0.0, self._autostart)

    # --- lifecycle ----------------------------------------------------------------------------------
    def _autostart(self) -> None:
        self.destroy_timer(self._autostart_timer)
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            self._read_parameters()
        except (ValueError, OntologyError, FileNotFoundError) as error:
            self.get_logger().error(f"configure refused: {error}")
            return TransitionCallbackReturn.FAILURE
        self._setup_io()
        self.get_logger().info(f"configured: cameras {', '.join(self.cameras)}, backend {self.backend_name}, "
                               f"gate {self.gate_node}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        try:
            backend, commissioning = self._build_backend()
            self._view_checks = {camera: ViewQualityCheck(commissioning.cameras[camera].background.median
                                                          if commissioning else None) for camera in self.cameras}
        except Exception as error:  # noqa: BLE001 - a model that cannot load must not take the node down
            self.get_logger().error(f"activate refused: backend '{self.backend_name}' failed to load: {error}")
            return TransitionCallbackReturn.FAILURE
        self._log_calibration(self._calibration.commission(commissioning.geometry() if commissioning else {},
                                                           commissioning.image_sizes() if commissioning else {}))
        if commissioning is None:
            self.get_logger().warning("no commissioning_file: no intrusion monitor beside the model, only what it "
                                      "names is forbidden (see workcell_commission); calibration from camera_info "
                                      f"and /tf_static ({self.workcell_frame})")
        with self._lock:
            self._pending_geometry = None
        self._pipeline = PerceptionPipeline(backend, self.ontology, self._calibration.geometry(),
                                            ActionabilityConfig(clearance_px=self.clearance_px),
                                            KeyframeScheduler(self.keyframe_interval),
                                            intrusion=commissioning.intrusion_monitor() if commissioning else None)
        with self._lock:
            if self._pending_intent is not None:
                self._pipeline.set_intent(self._pending_intent)
                self._applied_intent = self._intent_sequence
        if self.flywheel_dir:
            self._flywheel = FlywheelLogger(
                Path(self.flywheel_dir).expanduser(), self.ontology, run=f"{self.get_fully_qualified_name()}",
                policy=self.flywheel_policy, meta={"cameras": self.cameras, "ontology_version": self.ontology.version})
            if self._flywheel.stats.recovered:
                self.get_logger().warning(f"flywheel: sealed {self._flywheel.stats.recovered} shard(s) left open "
                                          "by an earlier crash")
        self._running = True
        self._worker = threading.Thread(target=self._work, name="segmentation-worker", daemon=True)
        self._worker.start()
        self._subscribe_inputs()
        self.get_logger().info(f"active: {backend.name} ({backend.model_version})")
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._unsubscribe_inputs()
        self._stop_worker()
        self._close_flywheel()
        self._pipeline = None  # frees the model
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._teardown_io()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._stop_worker()
        self._close_flywheel()
        self._teardown_io()
        return TransitionCallbackReturn.SUCCESS

    # --- configuration ------------------------------------------------------------------------------
    def _read_parameters(self) -> None:
        value = lambda name: self.get_parameter(name).value  # noqa: E731
        self.cameras = [c.strip() for c in value("cameras")]
        bad = [c for c in self.cameras if not _CAMERA_NAME.match(c)]
        if not self.cameras or bad or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"cameras must be unique names like cam_left; got {value('cameras')}")
        self.transports = dict(zip(self.cameras, per_camera_transports(value("transport"), self.cameras)))
        self.sixteen_bit = SixteenBitRule(value("sixteen_bit"))
        self.backend_name = value("backend")
        self.commissioning_file = value("commissioning_file")
        self.workcell_frame = value("workcell_frame").strip().lstrip("/")
        if not self.workcell_frame:
            raise ValueError("workcell_frame must name a /tf_static frame, e.g. workcell")
        self.model_registry = value("model_registry")
        self.backend_spec = BackendSpec(self.backend_name, value("checkpoint"), self.model_registry,
                                        value("model_version"), value("engine_cache"), value("precision"),
                                        value("calibration_images"), views=len(self.cameras),
                                        image_size=value("image_size"), max_objects=value("max_objects"))
        if self.backend_name == "classical" and not self.commissioning_file:
            raise ValueError("backend 'classical' needs commissioning_file (see workcell_commission)")
        self.flywheel_dir = value("flywheel_dir")
        if self.flywheel_dir and importlib.util.find_spec("pycocotools") is None:
            raise ValueError("flywheel_dir needs pycocotools to write COCO shards (pip install pycocotools; "
                             "rosdep has no key for it), or leave flywheel_dir empty")
        self.flywheel_policy = FlywheelPolicy(
            PseudoLabelPolicy(min_score=value("flywheel_min_score"), stable_frames=value("flywheel_stable_frames"),
                              every_n=value("flywheel_every_n")),
            HardCasePolicy(frames_before=value("flywheel_clip_frames"), frames_after=value("flywheel_clip_frames")),
            frame_sets_per_shard=value("flywheel_frame_sets_per_shard"),
            max_bytes=int(value("flywheel_max_gb") * 1024**3))
        self.slop_s, self.sync_queue = value("sync_slop_s"), value("sync_queue_size")
        self.stale_after_s, self.keyframe_interval = value("stale_after_s"), value("keyframe_interval")
        self.clearance_px, self.worker_queue = value("clearance_px"), value("worker_queue")
        self.publish_masks, self.publish_overlay = value("publish_masks"), value("publish_overlay")
        gate_node = value("gate_node").strip()
        if not _NODE_NAME.match(gate_node):
            raise ValueError(f"gate_node must be a node name like operator_intent or /workcell/operator_intent; "
                             f"got '{gate_node}'")
        namespace = self.get_namespace().rstrip("/")
        self.gate_node = gate_node if gate_node.startswith("/") else f"{namespace}/{gate_node}"
        self.gate_timeout_s = value("gate_timeout_s")
        self.good_images_to_recover, self.max_future_stamp_s = value("good_images_to_recover"), value("max_future_stamp_s")
        self.ontology = load_ontology(value("ontology_file") or None)

    def _build_backend(self):
        """(backend, commissioning or None)."""
        commissioning = Commissioning.load(Path(self.commissioning_file).expanduser()) \
            if self.commissioning_file else None
        if commissioning is not None:
            missing = [c for c in self.cameras if c not in commissioning.cameras]
            if missing:
                raise ValueError(f"commissioning has no data for {', '.join(missing)}")
        if self.backend_name == "sam3_small":
            self.get_logger().warning("sam3_small has random weights: for plumbing tests, its masks mean nothing")
        backend, self._registry_version = self.backend_spec.build(commissioning)
        return backend, commissioning

    def _setup_io(self) -> None:
        self.health = {c: CameraHealth(c, self.stale_after_s, self.good_images_to_recover, self.max_future_stamp_s)
                       for c in self.cameras}
        self._calibration = LiveCalibration(self.workcell_frame)
        self._geometry_version = 0
        self._pending_geometry = None  # learned calibration the worker hands the pipeline
        self._inputs = {camera: camera_input(self.transports[camera], self.sixteen_bit) for camera in self.cameras}
        self._gate_monitor = GateMonitor(self.gate_node, self.gate_timeout_s)
        self._gate_publishers: dict[bytes, str] = {}  # publisher GID -> node, from the ROS graph
        self._pending_intent = None
        self._intent_sequence = 0   # newest ActiveIntent received
        self._applied_intent = 0    # the one the pipeline decides with
        self._results = ResultPublisher(lambda: self._conditions(at_publish=True), self._send)
        self._last_input_s = time.monotonic()  # last synchronized set, or watchdog report
        self._frame_set_pub = self.create_lifecycle_publisher(
            FrameSetResult, "frame_set", endpoint_qos(SEGMENTATION_NODE, "frame_set"))
        self._diagnostics_pub = self.create_lifecycle_publisher(
            DiagnosticArray, "/diagnostics", endpoint_qos(SEGMENTATION_NODE, "/diagnostics"))
        self._view_pubs = {}
        for camera in self.cameras:
            pubs = {}
            if self.publish_masks:
                for name in ("target_labels", "forbidden_mask"):
                    pubs[name] = self.create_lifecycle_publisher(
                        Image, f"{camera}/{name}", endpoint_qos(SEGMENTATION_NODE, f"{{camera}}/{name}"))
            if self.publish_overlay:
                pubs["overlay"] = self.create_lifecycle_publisher(
                    Image, f"{camera}/overlay", endpoint_qos(SEGMENTATION_NODE, "{camera}/overlay"))
            self._view_pubs[camera] = pubs
        self._io = [self.create_subscription(ActiveIntent, "active_intent",
                                             contained(self, "active intent")(self._on_intent),
                                             endpoint_qos(SEGMENTATION_NODE, "active_intent"))]
        self._gate_sub = subscribe_with_info(self, GateState, "gate_state",
                                             contained(self, "gate state")(self._on_gate),
                                             endpoint_qos(SEGMENTATION_NODE, "gate_state"))
        self._io.append(self._gate_sub)
        self._swap_service = self.create_service(SwapModel, "swap_model", self._on_swap_model)
        self._timers = [self.create_timer(min(self.stale_after_s, self.gate_timeout_s) / 2,
                                          contained(self, "watchdog")(self._watchdog)),
                        self.create_timer(1.0, contained(self, "diagnostics")(self._publish_diagnostics))]

    def _subscribe_inputs(self) -> None:
        """Cameras and hard-case reports, while active only; a fresh synchronizer each time."""
        self._sync = make_synchronizer(len(self.cameras), self.sync_queue, self.slop_s, self._on_frame_set)
        self._inputs_io = [
            subscribe_with_info(self, self._inputs[camera].message_type, f"{camera}/{self._inputs[camera].topic}",
                                contained(self, f"{camera} image")(
                                    lambda message, info, index=index: self._on_image(index, message, info)),
                                endpoint_qos(SEGMENTATION_NODE, f"{{camera}}/{self._inputs[camera].topic}"))
            for index, camera in enumerate(self.cameras)]
        self._inputs_io += [self.create_subscription(CameraInfo, f"{camera}/camera_info",
                                                     contained(self, f"{camera} camera_info")(
                                                         lambda message, camera=camera: self._on_camera_info(camera,
                                                                                                             message)),
                                                     endpoint_qos(SEGMENTATION_NODE, "{camera}/camera_info"))
                            for camera in self.cameras]
        self._inputs_io += [
            self.create_subscription(TFMessage, "/tf_static", contained(self, "/tf_static")(self._on_tf_static),
                                     endpoint_qos(SEGMENTATION_NODE, "/tf_static")),
            self.create_subscription(HardCaseReport, "hard_case_report",
                                     contained(self, "hard case report")(self._on_hard_case),
                                     endpoint_qos(SEGMENTATION_NODE, "hard_case_report"))]

    def _unsubscribe_inputs(self) -> None:
        for subscription in self._inputs_io:
            self.destroy_subscription(subscription)
        self._inputs_io = []

    def _teardown_io(self) -> None:
        self._unsubscribe_inputs()
        for subscription in self._io:
            self.destroy_subscription(subscription)
        if getattr(self, "_swap_service", None) is not None:
            self.destroy_service(self._swap_service)
            self._swap_service = None
        for timer in getattr(self, "_timers", []):
            self.destroy_timer(timer)
        self._io, self._timers = [], []

    # --- callbacks: cheap, never block --------------------------------------------------------------
    def _on_image(self, index: int, message, info: dict | None) -> None:  # Image or CompressedImage
        camera = self.cameras[index]
        arrival_ns = received_ns(info)
        stamp_ns = nanoseconds(message.header.stamp)
        with self._stages.time("receive (per image)"):
            format_problem = self._inputs[camera].check(message, self._calibration.image_size(camera)) \
                or self._calibration.problem(camera)
            problem = self.health[camera].accept(stamp_ns, arrival_ns / 1e9, self.get_clock().now().nanoseconds,
                                                 format_problem)
        if problem:
            self.get_logger().warning(f"{camera}: image dropped: {problem}", throttle_duration_sec=2.0)
            return
        with self._stages.time("sync (per image)"):
            self._sync.add(index, stamp_ns, Arrived(message.header, message, arrival_ns))

    def _on_camera_info(self, camera: str, message: CameraInfo) -> None:
        self._log_calibration(self._calibration.camera_info(camera, message))

    def _on_tf_static(self, message: TFMessage) -> None:
        self._log_calibration(self._calibration.add_transforms(message.transforms))

    def _log_calibration(self, changes: list[tuple[str, str]]) -> None:
        """One line per camera whose calibration changed; the pipeline takes new geometry at its
        next frame set (the worker owns it)."""
        for camera, state in changes:
            if self._calibration.problem(camera):  # rclpy: one severity per call site
                self.get_logger().error(f"{camera}: {state}")
            else:
                self.get_logger().info(f"{camera}: {state}")
        if self._calibration.version != self._geometry_version:
            self._geometry_version = self._calibration.version
            with self._lock:
                self._pending_geometry = self._calibration.geometry()

    def _on_frame_set(self, *arrived: Arrived) -> None:
        self._last_input_s = time.monotonic()
        with self._wake:
            self._queue.append(arrived)
            while len(self._queue) > self.worker_queue:
                self._queue.popleft()  # drop the oldest: latency stays bounded when the model is slow
            self._wake.notify()

    def _on_intent(self, message: ActiveIntent) -> None:
        try:
            intent = resolve_intent(message.text, self.ontology)
        except IntentError as error:
            self.get_logger().error(f"active intent #{message.sequence} cannot be resolved here: {error}")
            return
        if message.ontology_version != self.ontology.version:
            self.get_logger().warning(f"intent was resolved against ontology {message.ontology_version}, "
                                      f"this node runs {self.ontology.version}")
        def apply() -> None:
            with self._lock:
                self._pending_intent = intent
                self._intent_sequence = message.sequence

        self._results.update(apply)

    def _on_gate(self, message: GateState, info: dict | None) -> None:
        publisher = self._gate_publisher(info)
        if publisher == "":
            return  # not yet in the graph; its next heartbeat will be
        refused = self._results.update(lambda: self._gate_monitor.heard(
            message.state, message.transition_count, time.monotonic(), publisher))
        if refused:
            self.get_logger().error(refused, throttle_duration_sec=5.0)

    def _gate_publisher(self, info: dict | None) -> str | None:
        """Full name of the node that published a gate_state message: None where the middleware
        does not say (then the graph check alone guards), "" where the graph does not know it yet."""
        gid = (info or {}).get("publisher_gid")
        if not gid or not gid.get("data"):
            return None
        key = bytes(gid["data"])
        if key not in self._gate_publishers:
            self._refresh_gate_publishers()
        return self._gate_publishers.get(key, "")

    def _refresh_gate_publishers(self) -> None:
        endpoints = self.get_publishers_info_by_topic(self._gate_sub.topic_name)
        names = {bytes(e.endpoint_gid): f"{e.node_namespace.rstrip('/')}/{e.node_name}" for e in endpoints}
        # GIDs are 16 bytes in message info and 16 or 24 (Humble) in the graph: key by the shorter.
        self._gate_publishers = {gid[:16]: name for gid, name in names.items()}
        self._gate_monitor.publishers(list(names.values()))

    def _on_hard_case(self, message: HardCaseReport) -> None:
        kind = _HARD_CASE_KINDS.get(message.kind)
        if kind is None:
            self.get_logger().error(f"hard case report with kind {message.kind} ignored: use KIND_MISPICK or "
                                    "KIND_OPERATOR_REJECT")
            return
        if self._flywheel is None:
            self.get_logger().warning("hard case report ignored: flywheel_dir is not set", throttle_duration_sec=10.0)
            return
        detail = (f"{printable(message.reporter_id, 64) or 'anonymous'}: frame set "
                  f"{message.frame_set_sequence or 'latest'}, track {message.track_id or 'all'}: "
                  f"{printable(message.detail, 256)}")
        if self._flywheel.report(kind, detail):
            self.get_logger().info(f"hard case saved around now: {kind}: {detail}")

    def _on_swap_model(self, request: SwapModel.Request, response: SwapModel.Response) -> SwapModel.Response:
        response.previous_version = response.active_version = self._serving_version()
        if not self.model_registry or self._pipeline is None:
            response.reason = "swap_model needs an active node with backend 'sam3' and model_registry set"
            return response
        target = self._version_before_swap if request.rollback else request.version
        if request.rollback and not target:
            response.reason = "no earlier model to roll back to since this node started"
            return response
        try:
            entry, model = load_registered_model(ModelRegistry(self.model_registry), target)
            backend = self.backend_spec.wrap(model)
        except Exception as error:  # noqa: BLE001 - whatever went wrong, the serving model stays
            response.reason = f"kept {response.previous_version}: {type(error).__name__}: {error}"
            self.get_logger().error(f"swap_model refused: {response.reason}")
            return response
        with self._process_lock:  # between two frame sets
            self._pipeline.swap_backend(backend)
            self._version_before_swap, self._registry_version = self._registry_version, entry.version
        response.accepted, response.active_version = True, entry.version
        response.reason = f"serving {entry.version} (was {response.previous_version}); gate and intent unchanged"
        self.get_logger().info(f"swap_model: {response.reason}")
        return response

    def _serving_version(self) -> str:
        backend = self._pipeline.backend if self._pipeline else None
        return self._registry_version or (backend.model_version if backend else "")

    # --- the worker ---------------------------------------------------------------------------------
    def _close_flywheel(self) -> None:
        if self._flywheel is not None:
            self._flywheel.close()
            self._flywheel = None

    def _stop_worker(self) -> None:
        with self._wake:
            self._running = False
            self._wake.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=30)
            self._worker = None

    def _work(self) -> None:
        while True:
            with self._wake:
                while self._running and not self._queue:
                    self._wake.wait(timeout=0.5)
                if not self._running:
                    return
                arrived = self._queue.popleft()
                intent, self._pending_intent = self._pending_intent, None
                geometry, self._pending_geometry = self._pending_geometry, None
                if intent is not None:
                    self._applied_intent = self._intent_sequence
            if intent is not None:
                self._pipeline.set_intent(intent)
            if geometry is not None:
                self._pipeline.set_geometry(geometry)
            try:
                with self._process_lock:
                    self._process(arrived)
            except Exception as error:  # noqa: BLE001 - the worker must outlive any one frame set
                self.get_logger().error(f"frame set failed: {type(error).__name__}: {error}",
                                        throttle_duration_sec=2.0)
                self._publish_nothing_actionable(model_error=f"{type(error).__name__}: {error}")

    def _conditions(self, at_publish: bool = False) -> Conditions:
        """The gate, intent and cameras as they are now: at the decision (the intent the pipeline
        decides with) and again at publish (the newest intent received)."""
        now_s, wall_s = time.monotonic(), time.time()
        gate = self._gate_monitor.view(now_s)
        problems, blind = {}, {}
        for camera in self.cameras:
            status, detail = self.health[camera].status(wall_s)
            if status is CameraStatus.BLIND:
                blind[camera] = detail
            elif status is not CameraStatus.OK:
                problems[camera] = detail
        if at_publish:
            intent = self._intent_sequence
        else:
            intent = self._applied_intent if self._pipeline is not None and self._pipeline.intent else 0
        return Conditions(gate.state, gate.epoch, gate.problem, intent, problems, blind)

    def _process(self, arrived: tuple[Arrived, ...]) -> None:
        views, stage_ms = [], {}
        for camera, item in zip(self.cameras, arrived):
            converting = time.perf_counter()
            try:
                image = self._inputs[camera].to_rgb(item.message, self._calibration.image_size(camera))
            except ImageError as error:
                self.health[camera].reject(str(error))
                self.get_logger().error(f"{camera}: {error}", throttle_duration_sec=2.0)
                continue
            try:
                blind = self._view_checks[camera].check(image)
            except ValueError as error:  # e.g. an image that does not match the commissioned background
                blind = f"view check failed: {error}"
            self.health[camera].report_view(blind)
            views.append(CameraFrame(camera, nanoseconds(item.header.stamp), image, item.header.frame_id))
            stage = self._inputs[camera].stage
            stage_ms[stage] = stage_ms.get(stage, 0.0) + (time.perf_counter() - converting) * 1000.0
        for stage, milliseconds in stage_ms.items():
            self._stages.add(stage, milliseconds)
        decided = self._conditions()
        pipeline_started = time.perf_counter()
        outcome = self._pipeline.process(views, decided)
        self._stages.add("backend", outcome.inference_ms)
        self._stages.add("post-processing", (time.perf_counter() - pipeline_started) * 1000.0 - outcome.inference_ms)
        result, view_images = self._build(arrived, {view.camera: view.image for view in views}, outcome)
        result.gate_epoch, result.intent_sequence = decided.gate_epoch, decided.intent_sequence
        with self._stages.time("publish"):
            final = self._results.publish((result, max(item.arrival_ns for item in arrived)), outcome.verdict, decided)
        with self._stages.time("publish images"):
            for publisher, image_message_ in view_images:
                publisher.publish(image_message_)
        if self._flywheel is not None:
            self._flywheel.observe(result.sequence, views, replace(outcome, verdict=final), decided.gate,
                                   {"model_version": self._serving_version()})

    # --- output -------------------------------------------------------------------------------------
    def _build(self, arrived, images: dict[str, np.ndarray], outcome: FrameSetOutcome):
        """The result message (verdict fields still to be set at publish) and the view images."""
        building = time.perf_counter()
        newest_ns = max(nanoseconds(item.header.stamp) for item in arrived)
        result = FrameSetResult(header=Header(stamp=stamp_of(newest_ns)), model_version=self._serving_version(),
                                ontology_version=self.ontology.version, inference_ms=float(outcome.inference_ms))
        view_images, encoding_s, now_s = [], 0.0, time.time()
        for camera, item in zip(self.cameras, arrived):
            instances = outcome.views.get(camera, [])
            # The decoded size; a raw image that could not be converted still says its own.
            height, width = images[camera].shape[:2] if camera in images else \
                (getattr(item.message, "height", 0), getattr(item.message, "width", 0))
            view = ViewResult(header=item.header, camera_name=camera, height=height, width=width)
            view.camera_rate_hz = float(self.health[camera].rate_hz(now_s))
            targets = [i for i in instances if i.role is Role.TARGET]
            label_values = {id(instance): value for value, instance in enumerate(targets, start=1)}
            encoding = time.perf_counter()
            view.instances = [instance_message(i, label_values.get(id(i), 0)) for i in instances]
            encoding_s += time.perf_counter() - encoding
            result.views.append(view)
            if camera in images:  # nothing is drawn from an image that was rejected
                view_images += self._view_images(camera, item.message, images[camera], instances, targets, outcome)
        self._stages.add("mask encoding", encoding_s * 1000.0)
        self._stages.add("message build", (time.perf_counter() - building - encoding_s) * 1000.0)
        return result, view_images

    def _send(self, outgoing: tuple[FrameSetResult, int | None], verdict: Verdict, now: Conditions,
              sequence: int) -> None:
        """Called by the ResultPublisher with its lock held: the verdict as it stands at publish.
        `outgoing`: the result and the arrival time (ns) of its newest image, None for reports."""
        result, arrival_ns = outgoing
        result.sequence = sequence
        result.actionable, result.confidence = verdict.actionable, float(verdict.confidence)
        result.reason_codes = [int(code) for code, _ in verdict.reasons]
        result.reasons = [text for _, text in verdict.reasons]
        result.gate_state = int(now.gate)
        wall_s = time.time()
        for view in result.views:
            status, detail = self.health[view.camera_name].status(wall_s)
            view.camera_status, view.camera_detail = int(status), detail
        if arrival_ns is not None:
            result.latency_ms = float((time.time_ns() - arrival_ns) / 1e6)
        result.source_age_ms = float((self.get_clock().now().nanoseconds - nanoseconds(result.header.stamp)) / 1e6)
        self._frame_set_pub.publish(result)

    def _view_images(self, camera, message, image, instances, targets, outcome) -> list[tuple]:
        """(publisher, message) of this view's label, forbidden and overlay images."""
        pubs = self._view_pubs[camera]
        built = []
        shape = image.shape[:2]
        if "target_labels" in pubs:
            labels = label_image(shape, [target.mask for target in targets])
            forbidden = np.zeros(shape, np.uint8)
            for instance in instances:
                if instance.role is Role.FORBIDDEN:
                    instance.mask.paint(forbidden, 255)
            built += [(pubs["target_labels"], image_message(message.header, labels, "mono16")),
                      (pubs["forbidden_mask"], image_message(message.header, forbidden, "mono8"))]
        if "overlay" in pubs:
            items = [OverlayItem(i.mask, i.role, f"{i.label}#{i.track_id}") for i in instances]
            verdict = outcome.verdict
            banner = "ACTIONABLE" if verdict.actionable else f"NOT ACTIONABLE: {verdict.reasons[0][1]}"
            built.append((pubs["overlay"], image_message(message.header, draw_overlay(image, items, banner), "rgb8")))
        return built

    def _watchdog(self) -> None:
        """No synchronized frame set for a while (a camera stopped, sync cannot match): say so, not
        actionable. A slow model is not a stale camera: frame sets keep arriving then. Also the
        ROS graph check of who publishes the gate state."""
        self._refresh_gate_publishers()
        if self._pipeline is None or time.monotonic() - self._last_input_s < self.stale_after_s:
            return
        self._publish_nothing_actionable()

    def _publish_nothing_actionable(self, model_error: str | None = None) -> None:
        """A result without instances that says why nothing may be done."""
        conditions = self._conditions()
        if not conditions.camera_problems and not conditions.blind_cameras and model_error is None:
            conditions = replace(conditions, camera_problems={
                c: "no synchronized frame set (stamps further apart than the slop?)" for c in self.cameras})
        verdict = decide({}, conditions, self.ontology, self._pipeline.intent, model_error=model_error)
        result = FrameSetResult(header=Header(stamp=self.get_clock().now().to_msg()),
                                model_version=self._serving_version(), ontology_version=self.ontology.version,
                                views=[ViewResult(camera_name=camera) for camera in self.cameras])
        result.gate_epoch, result.intent_sequence = conditions.gate_epoch, conditions.intent_sequence
        self._results.publish((result, None), verdict, conditions)
        self._last_input_s = time.monotonic()

    def _publish_diagnostics(self) -> None:
        now_s = time.time()
        statuses = []
        cameras = {camera: (*self.health[camera].status(now_s), self.health[camera].rate_hz(now_s))
                   for camera in self.cameras}
        for camera, (status, detail, rate_hz) in cameras.items():
            level = DiagnosticStatus.OK if status is CameraStatus.OK else DiagnosticStatus.ERROR
            statuses.append(DiagnosticStatus(
                level=level, name=f"{SEGMENTATION_NODE}: camera {camera}", message=detail or "ok",
                hardware_id=camera, values=[KeyValue(key="rate_hz", value=f"{rate_hz:.1f}"),
                                            KeyValue(key="status", value=status.name)]))
        gate = self._gate_monitor.view(time.monotonic())
        statuses.append(DiagnosticStatus(
            level=DiagnosticStatus.OK if self._pipeline else DiagnosticStatus.WARN, name=f"{SEGMENTATION_NODE}: model",
            message=self._serving_version() or "inactive",
            values=[KeyValue(key="gate", value=gate.state.name), KeyValue(key="frame_sets", value=str(self._results.sequence))]
            + [KeyValue(key=f"{stage} p50/p95 ms", value=f"{p50:.2f} / {p95:.2f}")
               for stage, (p50, p95, _) in self._stages.summary().items()]))
        statuses.append(DiagnosticStatus(
            level=DiagnosticStatus.ERROR if gate.problem else DiagnosticStatus.OK,
            name=f"{SEGMENTATION_NODE}: gate", message=gate.problem or gate.state.name,
            values=[KeyValue(key="gate_node", value=self.gate_node), KeyValue(key="epoch", value=str(gate.epoch))]))
        if self._flywheel is not None:
            stats = self._flywheel.stats
            statuses.append(DiagnosticStatus(
                level=DiagnosticStatus.WARN if stats.write_errors or stats.dropped else DiagnosticStatus.OK,
                name=f"{SEGMENTATION_NODE}: flywheel", message=stats.last_error or "ok",
                values=[KeyValue(key=key, value=str(value)) for key, value in vars(stats).items() if key != "last_error"]))
        self._diagnostics_pub.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()),
                                                      status=statuses))


def main(args=None) -> int:
    return run_node("segmentation", __doc__, SegmentationNode, args, SEGMENTATION_PARAMETERS)


if __name__ == "__main__":
    sys.exit(main())
