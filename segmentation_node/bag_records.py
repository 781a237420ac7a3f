"""rosbag2 files with `rosbags` (no ROS install): the one reader every tool uses, the type store
with this package's messages, and frame-set results as plain records with their FrameSetResult
messages (ground truth of the synthetic recordings, outputs of offline runs, and whatever
`ros2 bag record` captured from a live node)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from segmentation_node.contract import PACKAGE, CameraStatus, Reason, Role, Source
from segmentation_node.masks import BoxedMask, mask_from_counts
from segmentation_node.package_files import message_definitions


def ros2_typestore():
    """Kilted's standard types plus this package's messages, from their .msg definitions."""
    typestore = get_typestore(Stores.ROS2_KILTED)
    for name, text in message_definitions().items():
        typestore.register(get_types_from_msg(text, name))
    return typestore


def bag_start_ns(bag: Path) -> int:
    with Reader(bag) as reader:
        return reader.start_time


def read_messages(bag: Path, topics: Iterable[str], why: str = "", deserialize: bool = True
                  ) -> Iterator[tuple[int, str, object]]:
    """(receive time ns, topic, message) of `topics` in bag order, deserialized (or the raw CDR
    bytes); ValueError naming the topics the recording lacks (`why`: what they are needed for)."""
    wanted_topics = set(topics)
    typestore = ros2_typestore() if deserialize else None
    with Reader(bag) as reader:
        wanted = [c for c in reader.connections if c.topic in wanted_topics]
        missing = sorted(wanted_topics - {c.topic for c in wanted})
        if missing:
            present = ", ".join(sorted({c.topic for c in reader.connections})) or "nothing"
            raise ValueError(f"{bag} has no {', '.join(missing)}{f' ({why})' if why else ''}; it has {present}")
        for connection, timestamp, raw in reader.messages(connections=wanted):
            message = typestore.deserialize_cdr(raw, connection.msgtype) if deserialize else bytes(raw)
            yield timestamp, connection.topic, message


@dataclass(frozen=True, eq=False)
class InstanceRecord:
    track_id: int
    label: str
    role: Role
    score: float
    mask: BoxedMask
    attributes: tuple[str, ...] = ()
    source: Source = Source.MODEL
    stability: float = 0.0
    prompt: str = ""
    label_value: int = 0


@dataclass(frozen=True, eq=False)
class ViewRecord:
    camera: str
    frame_id: str
    stamp_ns: int
    height: int
    width: int
    instances: tuple[InstanceRecord, ...]
    status: CameraStatus = CameraStatus.OK
    detail: str = ""


@dataclass(frozen=True, eq=False)
class FrameSetRecord:
    stamp_ns: int
    views: tuple[ViewRecord, ...]
    actionable: bool
    reasons: tuple[tuple[Reason, str], ...] = ()
    confidence: float = 0.0
    sequence: int = 0
    model_version: str = ""
    ontology_version: str = ""
    inference_ms: float = 0.0


def to_message(record: FrameSetRecord, typestore):
    """The rosbags FrameSetResult of a record, for Writer.write(..., typestore.serialize_cdr(...))."""
    types = typestore.types

    def header(stamp_ns: int, frame_id: str):
        stamp = types["builtin_interfaces/msg/Time"](sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
        return types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)

    def instance(item: InstanceRecord, height: int, width: int):
        x, y, w, h = item.mask.xywh()
        roi = types["sensor_msgs/msg/RegionOfInterest"](x_offset=x, y_offset=y, width=w, height=h, do_rectify=False)
        mask = types[f"{PACKAGE}/msg/MaskRLE"](height=height, width=width,
                                               counts=np.asarray(item.mask.rle_counts(), dtype=np.uint32))
        return types[f"{PACKAGE}/msg/InstanceMask"](
            track_id=item.track_id, label=item.label, attributes=list(item.attributes), prompt=item.prompt,
            role=int(item.role), source=int(item.source), score=float(item.score), stability=float(item.stability),
            bbox=roi, area=item.mask.area, label_value=item.label_value, mask=mask)

    views = [types[f"{PACKAGE}/msg/ViewResult"](
        header=header(view.stamp_ns, view.frame_id), camera_name=view.camera, camera_status=int(view.status),
        camera_detail=view.detail, camera_rate_hz=0.0, height=view.height, width=view.width,
        instances=[instance(item, view.height, view.width) for item in view.instances]) for view in record.views]
    return types[f"{PACKAGE}/msg/FrameSetResult"](
        header=header(record.stamp_ns, ""), sequence=record.sequence, views=views, actionable=record.actionable,
        confidence=float(record.confidence), reason_codes=np.array([int(c) for c, _ in record.reasons], np.uint8),
        reasons=[text for _, text in record.reasons], gate_state=0, gate_epoch=0, intent_sequence=0,
        model_version=record.model_version, ontology_version=record.ontology_version, latency_ms=0.0,
        source_age_ms=0.0, inference_ms=float(record.inference_ms))


def header_ns(header) -> int:
    """A header's stamp in nanoseconds, for rosbags' messages and rclpy's alike."""
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def from_message(message) -> FrameSetRecord:
    """A record of a FrameSetResult deserialized by rosbags (or any object with its fields)."""
    views = tuple(ViewRecord(
        view.camera_name, view.header.frame_id, header_ns(view.header), view.height, view.width,
        tuple(InstanceRecord(i.track_id, i.label, Role(i.role), i.score,
                             BoxedMask.from_array(mask_from_counts(i.mask.counts, i.mask.height, i.mask.width)),
                             tuple(i.attributes),
                             Source(i.source), i.stability, i.prompt, i.label_value) for i in view.instances),
        CameraStatus(view.camera_status), view.camera_detail) for view in message.views)
    return FrameSetRecord(header_ns(message.header), views, bool(message.actionable),
                          tuple((Reason(c), t) for c, t in zip(message.reason_codes, message.reasons)),
                          message.confidence, message.sequence, message.model_version, message.ontology_version,
                          message.inference_ms)
