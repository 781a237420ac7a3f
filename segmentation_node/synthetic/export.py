"""Export a synthetic clip as COCO (images + RLE annotations) and as a rosbag2 recording.

The bag is what a robot would have recorded: per camera `sensor_msgs/Image` (rgb8) and
`CameraInfo` with the frame stamps and optical frame ids, `/tf_static` with the camera poses,
plus the ground truth alongside (`/ground_truth/frame_set` in the package's own FrameSetResult,
and a mono16 track-id image per camera). Written with `rosbags`, so no ROS install is needed.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from tqdm import tqdm

from segmentation_node import __version__
from segmentation_node.atomic_io import atomic_write_bytes
from segmentation_node.bag_records import FrameSetRecord, InstanceRecord, ViewRecord, ros2_typestore, to_message
from segmentation_node.contract import PACKAGE
from segmentation_node.masks import BoxedMask, coco_mask_fields
from segmentation_node.synthetic.camera import PinholeCamera
from segmentation_node.synthetic.render import ViewRender, render_frame_set
from segmentation_node.synthetic.scene import DEFAULT_ROLES, Clip

WORLD_FRAME = "workcell"
GROUND_TRUTH_TOPIC = "/ground_truth/frame_set"
BAG_FORMATS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
CATEGORIES = sorted(DEFAULT_ROLES)


def image_topic(camera: PinholeCamera) -> str:
    return f"/{camera.name}/image_raw"


def camera_info_topic(camera: PinholeCamera) -> str:
    return f"/{camera.name}/camera_info"


def instance_ids_topic(camera: PinholeCamera) -> str:
    return f"/ground_truth/{camera.name}/instance_ids"


class CocoWriter:
    """COCO dataset: one image per (frame, camera); annotations carry track id, role, attributes
    and visibility besides the standard fields. The JSON is written atomically on close."""

    def __init__(self, directory: Path, clip: Clip):
        self.directory = directory
        self.dataset = {
            "info": {"description": "workcell_segmentation synthetic workcell", "version": __version__,
                     "config": asdict(clip.config)},
            "images": [], "annotations": [],
            "categories": [{"id": i + 1, "name": name, "supercategory": DEFAULT_ROLES[name].name.lower()}
                           for i, name in enumerate(CATEGORIES)],
            "cameras": [camera_dict(camera) for camera in clip.cameras],
        }

    def add(self, frame_index: int, view: ViewRender) -> None:
        image_id = len(self.dataset["images"]) + 1
        file_name = f"images/{view.camera.name}/{frame_index:06d}.png"
        ok, png = cv2.imencode(".png", cv2.cvtColor(view.image, cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError(f"PNG encoding failed for {file_name}")
        atomic_write_bytes(self.directory / file_name, png.tobytes())
        self.dataset["images"].append({
            "id": image_id, "file_name": file_name, "width": view.camera.width, "height": view.camera.height,
            "camera": view.camera.name, "frame_index": frame_index, "stamp_ns": view.stamp_ns})
        for instance in view.instances:
            self.dataset["annotations"].append({
                "id": len(self.dataset["annotations"]) + 1, "image_id": image_id,
                "category_id": CATEGORIES.index(instance.label) + 1,
                **coco_mask_fields(BoxedMask.from_array(view.mask(instance.track_id))), "iscrowd": 0,
                "track_id": instance.track_id, "role": instance.role.name.lower(),
                "attributes": list(instance.attributes),
                "visible_fraction": round(instance.visible_fraction, 6)})

    def close(self) -> Path:
        path = self.directory / "annotations.json"
        atomic_write_bytes(path, json.dumps(self.dataset, indent=1, sort_keys=True).encode())
        return path


def camera_dict(camera: PinholeCamera) -> dict:
    return {"name": camera.name, "frame_id": camera.frame_id, "width": camera.width, "height": camera.height,
            "K": camera.intrinsics.tolist(), "world_from_camera": camera.world_from_camera.tolist()}


class BagWriter:
    """rosbag2 recording of a clip. Written to a temporary directory and renamed when complete,
    so an interrupted export never leaves a bag that looks finished."""

    def __init__(self, path: Path, clip: Clip, storage: str = "mcap"):
        if storage not in BAG_FORMATS:
            raise ValueError(f"bag format must be one of {sorted(BAG_FORMATS)}, got {storage!r}")
        if path.exists():
            raise FileExistsError(f"{path} exists; choose another output or remove it")
        self.path = path
        # rosbags names the storage file after the bag directory: keep the final name inside a
        # scratch parent and move the finished directory into place.
        self._scratch = path.with_name(f".{path.name}.partial")
        shutil.rmtree(self._scratch, ignore_errors=True)
        self._scratch.mkdir(parents=True)
        self.types = ros2_typestore()
        self._writer = Writer(self._scratch / path.name, version=9, storage_plugin=BAG_FORMATS[storage])
        self._writer.open()
        self._connections = {}
        for camera in clip.cameras:
            self._connect(image_topic(camera), "sensor_msgs/msg/Image")
            self._connect(camera_info_topic(camera), "sensor_msgs/msg/CameraInfo")
            self._connect(instance_ids_topic(camera), "sensor_msgs/msg/Image")
        self._connect("/tf_static", "tf2_msgs/msg/TFMessage")
        self._connect(GROUND_TRUTH_TOPIC, f"{PACKAGE}/msg/FrameSetResult")
        self._write("/tf_static", clip.frames[0].stamp_ns, self._tf_static(clip, clip.frames[0].stamp_ns))
        self._sequence = 0

    def _connect(self, topic: str, msgtype: str) -> None:
        self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=self.types)

    def _write(self, topic: str, stamp_ns: int, message) -> None:
        connection = self._connections[topic]
        self._writer.write(connection, stamp_ns, self.types.serialize_cdr(message, connection.msgtype))

    def _msg(self, name: str, **fields):
        return self.types.types[name](**fields)

    def _header(self, stamp_ns: int, frame_id: str):
        stamp = self._msg("builtin_interfaces/msg/Time", sec=stamp_ns // 1_000_000_000,
                          nanosec=stamp_ns % 1_000_000_000)
        return self._msg("std_msgs/msg/Header", stamp=stamp, frame_id=frame_id)

    def _image(self, header, array: np.ndarray, encoding: str):
        step = array.shape[1] * array.dtype.itemsize * (array.shape[2] if array.ndim == 3 else 1)
        return self._msg("sensor_msgs/msg/Image", header=header, height=array.shape[0], width=array.shape[1],
                         encoding=encoding, is_bigendian=0, step=step,
                         data=np.frombuffer(np.ascontiguousarray(array).tobytes(), dtype=np.uint8))

    def _roi(self, x=0, y=0, width=0, height=0):
        return self._msg("sensor_msgs/msg/RegionOfInterest", x_offset=x, y_offset=y, width=width,
                         height=height, do_rectify=False)

    def _camera_info(self, header, camera: PinholeCamera):
        k = camera.intrinsics
        p = np.hstack([k, np.zeros((3, 1))])
        return self._msg("sensor_msgs/msg/CameraInfo", header=header, height=camera.height, width=camera.width,
                         distortion_model="plumb_bob", d=np.zeros(5), k=k.ravel(), r=np.eye(3).ravel(),
                         p=p.ravel(), binning_x=0, binning_y=0, roi=self._roi())

    def _tf_static(self, clip: Clip, stamp_ns: int):
        transforms = []
        for camera in clip.cameras:
            pose = camera.world_from_camera
            x, y, z, w = _quaternion(pose[:3, :3])
            transform = self._msg(
                "geometry_msgs/msg/Transform",
                translation=self._msg("geometry_msgs/msg/Vector3", x=pose[0, 3], y=pose[1, 3], z=pose[2, 3]),
                rotation=self._msg("geometry_msgs/msg/Quaternion", x=x, y=y, z=z, w=w))
            transforms.append(self._msg("geometry_msgs/msg/TransformStamped",
                                        header=self._header(stamp_ns, WORLD_FRAME),
                                        child_frame_id=camera.frame_id, transform=transform))
        return self._msg("tf2_msgs/msg/TFMessage", transforms=transforms)

    def add(self, stamp_ns: int, views: list[ViewRender]) -> None:
        for view in views:
            header = self._header(stamp_ns, view.camera.frame_id)
            self._write(image_topic(view.camera), stamp_ns, self._image(header, view.image, "rgb8"))
            self._write(camera_info_topic(view.camera), stamp_ns, self._camera_info(header, view.camera))
            self._write(instance_ids_topic(view.camera), stamp_ns, self._image(header, view.instance_map, "mono16"))
        self._sequence += 1
        truth = FrameSetRecord(stamp_ns, tuple(truth_record(view) for view in views), actionable=False,
                               confidence=1.0, sequence=self._sequence, model_version="ground_truth",
                               ontology_version="synthetic")
        self._write(GROUND_TRUTH_TOPIC, stamp_ns, to_message(truth, self.types))

    def close(self) -> Path:
        self._writer.close()
        (self._scratch / self.path.name).rename(self.path)
        self._scratch.rmdir()
        return self.path


def truth_record(view: ViewRender) -> ViewRecord:
    """Ground truth of one view as a result record: every visible object, score 1."""
    instances = tuple(InstanceRecord(i.track_id, i.label, i.role, 1.0, BoxedMask.from_array(view.mask(i.track_id)), i.attributes,
                                     stability=1.0) for i in view.instances)
    return ViewRecord(view.camera.name, view.camera.frame_id, view.stamp_ns, view.camera.height, view.camera.width,
                      instances)


def _quaternion(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation matrix, through its axis-angle form."""
    rotation_vector, _ = cv2.Rodrigues(np.asarray(rotation, dtype=np.float64))
    angle = float(np.linalg.norm(rotation_vector))
    if angle < 1e-12:
        return 0.0, 0.0, 0.0, 1.0
    x, y, z = (rotation_vector.ravel() / angle) * np.sin(angle / 2.0)
    return float(x), float(y), float(z), float(np.cos(angle / 2.0))


def export_clip(clip: Clip, out: Path, coco: bool = True, bag_format: str | None = "mcap",
                progress: bool = True) -> dict[str, Path]:
    """Render every frame set once and write the requested exports; returns what was written."""
    targets = ([out / "coco"] if coco else []) + ([out / "bag"] if bag_format else [])
    existing = [str(target) for target in targets if target.exists()]
    if existing:
        raise FileExistsError(f"{', '.join(existing)} exists; choose another output or remove it")
    out.mkdir(parents=True, exist_ok=True)
    coco_writer = CocoWriter(out / "coco", clip) if coco else None
    bag_writer = BagWriter(out / "bag", clip, bag_format) if bag_format else None
    for frame in tqdm(clip.frames, desc="rendering frame sets", unit="set", disable=not progress):
        views = render_frame_set(clip, frame.index)
        for view in views:
            if coco_writer:
                coco_writer.add(frame.index, view)
        if bag_writer:
            bag_writer.add(frame.stamp_ns, views)
    written = {}
    if coco_writer:
        written["coco"] = coco_writer.close()
    if bag_writer:
        written["bag"] = bag_writer.close()
    return written
