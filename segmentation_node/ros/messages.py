"""Conversions between the ROS-free core and the wire contract, and QoS from the contract."""
from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, RegionOfInterest
from std_msgs.msg import Header

from segmentation_node import contract
from segmentation_node.gate import GateStatus
from segmentation_node.image_codec import fields_of
from segmentation_node.perception.actionability import Instance
from segmentation_node.perception.intent import ResolvedIntent
from workcell_segmentation.msg import ActiveIntent, GateState, InstanceMask, MaskRLE

_RELIABILITY = {contract.Reliability.RELIABLE: ReliabilityPolicy.RELIABLE,
                contract.Reliability.BEST_EFFORT: ReliabilityPolicy.BEST_EFFORT}
_DURABILITY = {contract.Durability.VOLATILE: DurabilityPolicy.VOLATILE,
               contract.Durability.TRANSIENT_LOCAL: DurabilityPolicy.TRANSIENT_LOCAL}


def qos(spec: contract.QosSpec) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=spec.depth,
                      reliability=_RELIABILITY[spec.reliability], durability=_DURABILITY[spec.durability])


def endpoint_qos(node: str, name: str) -> QoSProfile:
    return qos(contract.endpoint(node, name).qos)


def stamp_of(stamp_ns: int) -> Time:
    return Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


def nanoseconds(stamp: Time) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def gate_message(status: GateStatus, heartbeat_period_s: float) -> GateState:
    return GateState(header=Header(stamp=stamp_of(status.stamp_ns)), state=int(status.state),
                     previous_state=int(status.previous_state), transition_count=status.transition_count,
                     operator_id=status.operator_id, reason=status.reason, active_faults=list(status.active_faults),
                     heartbeat_period_s=float(heartbeat_period_s))


def active_intent_message(intent: ResolvedIntent, sequence: int, operator_id: str, stamp_ns: int) -> ActiveIntent:
    return ActiveIntent(header=Header(stamp=stamp_of(stamp_ns)), sequence=sequence, operator_id=operator_id,
                        text=intent.text, ontology_version=intent.ontology_version,
                        pick_classes=list(intent.pick_classes), pick_attributes=list(intent.pick_attributes),
                        reject_attributes=list(intent.reject_attributes),
                        prompts=[p.text for p in intent.prompts], explanation=intent.explanation)


def instance_message(instance: Instance, label_value: int) -> InstanceMask:
    x, y, w, h = instance.mask.xywh()
    height, width = instance.mask.shape
    return InstanceMask(
        track_id=instance.track_id, label=instance.label, attributes=list(instance.attributes),
        prompt=instance.prompt, role=int(instance.role), source=int(instance.source),
        score=float(instance.score), stability=float(instance.stability),
        bbox=RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h), area=instance.mask.area,
        label_value=label_value,
        mask=MaskRLE(height=height, width=width, counts=instance.mask.rle_counts()))


def image_message(header: Header, array: np.ndarray, encoding: str) -> Image:
    return Image(header=header, **fields_of(array, encoding))
