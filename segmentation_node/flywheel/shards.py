"""Append-only, crash-safe COCO shards.

A shard is a COCO directory (`annotations.json` + `images/<camera>/<stamp>.png`, the layout of the
synthetic exporter, so training reads both). While open it lives in `<root>/open/<id>/`; each
frame set is one record: its PNGs are written atomically first, then `records/<n>.json`
(atomic + fsync). A frame set is *acknowledged* when `add` returns: its record is durable.
Sealing writes `annotations.json` + `shard.json` from the records and renames the directory to
`<root>/shards/<id>/`, so a directory under `shards/` is always complete. After a crash,
`recover` seals what was open from its complete records and removes torn files (a PNG without
its record, a temporary file).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from segmentation_node import __version__
from segmentation_node.atomic_io import atomic_write_bytes, fsync_directory
from segmentation_node.masks import BoxedMask, coco_mask_fields

OPEN_DIR, SEALED_DIR = "open", "shards"
SHARD_INFO = "shard.json"
ANNOTATIONS = "annotations.json"
KINDS = ("pseudo_label", "hard_case")
# Retention deletes pseudo-labels before hard cases: hard cases are rarer and worth more.
_RETENTION_ORDER = {"pseudo_label": 0, "hard_case": 1}


@dataclass(frozen=True)
class LoggedInstance:
    track_id: int
    label: str
    role: str            # "target" / "forbidden" / ... (Role name, lower case)
    attributes: tuple[str, ...]
    score: float
    mask: BoxedMask


@dataclass(frozen=True)
class LoggedView:
    camera: str
    stamp_ns: int
    frame_id: str
    image: np.ndarray    # H x W x 3 uint8 RGB
    instances: tuple[LoggedInstance, ...]


@dataclass(frozen=True)
class LoggedFrameSet:
    sequence: int
    views: tuple[LoggedView, ...]
    meta: dict = field(default_factory=dict)  # model / ontology version, intent, verdict, trigger


@dataclass(frozen=True)
class ShardInfo:
    shard_id: str
    kind: str
    path: Path
    frame_sets: int
    images: int
    annotations: int
    bytes: int
    created_ns: int
    meta: dict


class ShardWriter:
    """Writes one shard at a time; seals after `max_frame_sets` records (or on `seal`)."""

    def __init__(self, root: Path | str, kind: str, categories: list[str], run: str,
                 max_frame_sets: int = 50, meta: dict | None = None):
        if kind not in KINDS:
            raise ValueError(f"shard kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if max_frame_sets < 1:
            raise ValueError(f"max_frame_sets must be >= 1, got {max_frame_sets}")
        self.root, self.kind, self.categories, self.run = Path(root), kind, list(categories), run
        self.max_frame_sets, self.meta = max_frame_sets, dict(meta or {})
        self._open: Path | None = None
        self._records = 0

    @property
    def open_shard(self) -> Path | None:
        return self._open

    def add(self, frame_set: LoggedFrameSet) -> Path | None:
        """Durable when it returns; returns the shard's sealed path when this record filled it."""
        if self._open is None:
            self._start()
        record = {"sequence": frame_set.sequence, "meta": frame_set.meta, "views": []}
        for view in frame_set.views:
            file_name = f"images/{view.camera}/{view.stamp_ns}.png"
            ok, png = cv2.imencode(".png", cv2.cvtColor(view.image, cv2.COLOR_RGB2BGR))
            if not ok:
                raise RuntimeError(f"PNG encoding failed for {file_name}")
            atomic_write_bytes(self._open / file_name, png.tobytes())
            record["views"].append({
                "file_name": file_name, "camera": view.camera, "stamp_ns": view.stamp_ns,
                "frame_id": view.frame_id, "height": int(view.image.shape[0]), "width": int(view.image.shape[1]),
                "instances": [_instance_json(instance) for instance in view.instances]})
        atomic_write_bytes(self._open / "records" / f"{self._records:08d}.json", json.dumps(record).encode())
        self._records += 1
        return self.seal() if self._records >= self.max_frame_sets else None

    def seal(self) -> Path | None:
        """Finish the open shard (no-op when none is open); returns its sealed path."""
        if self._open is None:
            return None
        path, self._open, self._records = _seal(self._open, self.root), None, 0
        return path

    def _start(self) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        shard_id = f"{self.kind}-{stamp}-{time.time_ns() % 10**9:09d}"
        shard = self.root / OPEN_DIR / shard_id
        (shard / "records").mkdir(parents=True)
        info = {"shard_id": shard_id, "kind": self.kind, "run": self.run, "categories": self.categories,
                "created_ns": time.time_ns(), "writer_version": __version__, "meta": self.meta}
        atomic_write_bytes(shard / "pending_info.json", json.dumps(info).encode())
        fsync_directory(shard.parent)
        self._open = shard


def _instance_json(instance: LoggedInstance) -> dict:
    return {"track_id": instance.track_id, "label": instance.label, "role": instance.role,
            "attributes": list(instance.attributes), "score": round(float(instance.score), 6),
            **coco_mask_fields(instance.mask)}


def _read_records(shard: Path) -> list[dict]:
    """Complete records, in order. A record that does not parse cannot exist (atomic writes), but
    a torn disk would show up here: skip it rather than poison the dataset."""
    records = []
    for path in sorted((shard / "records").glob("*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
    return records


def _seal(shard: Path, root: Path) -> Path:
    info = json.loads((shard / "pending_info.json").read_text())
    records = _read_records(shard)
    categories = info["categories"]
    dataset = {"info": {"description": f"workcell_segmentation flywheel {info['kind']} shard",
                        "shard_id": info["shard_id"], "run": info["run"], "version": info["writer_version"]},
               "categories": [{"id": index + 1, "name": name} for index, name in enumerate(categories)],
               "images": [], "annotations": []}
    referenced = set()
    for record in records:
        for view in record["views"]:
            image_id = len(dataset["images"]) + 1
            referenced.add(view["file_name"])
            dataset["images"].append({
                "id": image_id, "file_name": view["file_name"], "width": view["width"], "height": view["height"],
                "camera": view["camera"], "stamp_ns": view["stamp_ns"], "frame_id": view["frame_id"],
                "frame_index": record["sequence"], "run": info["run"], "meta": record["meta"]})
            for instance in view["instances"]:
                if instance["label"] not in categories:
                    continue
                dataset["annotations"].append({
                    "id": len(dataset["annotations"]) + 1, "image_id": image_id,
                    "category_id": categories.index(instance["label"]) + 1, "iscrowd": 0,
                    "segmentation": instance["segmentation"], "area": instance["area"], "bbox": instance["bbox"],
                    "track_id": instance["track_id"], "role": instance["role"],
                    "attributes": instance["attributes"], "score": instance["score"], "source": info["kind"]})
    _remove_torn_files(shard, referenced)
    atomic_write_bytes(shard / ANNOTATIONS, json.dumps(dataset).encode())
    info.update(frame_sets=len(records), images=len(dataset["images"]), annotations=len(dataset["annotations"]),
                sealed_ns=time.time_ns())
    atomic_write_bytes(shard / SHARD_INFO, json.dumps(info, indent=1).encode())
    sealed = root / SEALED_DIR / info["shard_id"]
    sealed.parent.mkdir(parents=True, exist_ok=True)
    os.rename(shard, sealed)
    fsync_directory(sealed.parent)
    fsync_directory(shard.parent)
    # Only now: until the rename is durable, the records are what recovery rebuilds from.
    shutil.rmtree(sealed / "records")
    (sealed / "pending_info.json").unlink()
    return sealed


def _remove_torn_files(shard: Path, referenced: set[str]) -> None:
    for path in (shard / "images").rglob("*") if (shard / "images").is_dir() else []:
        if path.is_file() and path.relative_to(shard).as_posix() not in referenced:
            path.unlink()  # a temporary file, or a PNG whose record never became durable


def recover(root: Path | str) -> list[Path]:
    """Seal every shard left open by a crash; returns the sealed paths."""
    open_root = Path(root) / OPEN_DIR
    sealed = []
    for shard in sorted(open_root.glob("*")) if open_root.is_dir() else []:
        if not (shard / "pending_info.json").is_file():
            shutil.rmtree(shard)  # killed before the shard's first write became durable
            continue
        if _read_records(shard):
            sealed.append(_seal(shard, Path(root)))
        else:
            shutil.rmtree(shard)
    return sealed


def list_shards(root: Path | str) -> list[ShardInfo]:
    """Sealed shards, oldest first."""
    sealed_root = Path(root) / SEALED_DIR
    shards = []
    for path in sorted(sealed_root.glob("*")) if sealed_root.is_dir() else []:
        info_file = path / SHARD_INFO
        if not info_file.is_file():
            continue
        info = json.loads(info_file.read_text())
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        shards.append(ShardInfo(info["shard_id"], info["kind"], path, info["frame_sets"], info["images"],
                                info["annotations"], size, info["created_ns"], info["meta"]))
    return sorted(shards, key=lambda shard: shard.created_ns)


def enforce_retention(root: Path | str, max_bytes: int) -> list[str]:
    """Delete sealed shards until they fit in `max_bytes`: pseudo-labels before hard cases,
    oldest first. Returns the deleted shard ids. A shard is renamed away before it is removed, so
    a crash mid-delete never leaves a partial shard under shards/."""
    shards = list_shards(root)
    total = sum(shard.bytes for shard in shards)
    deleted = []
    for shard in sorted(shards, key=lambda s: (_RETENTION_ORDER[s.kind], s.created_ns)):
        if total <= max_bytes:
            break
        trash = shard.path.with_name(f".deleting-{shard.shard_id}")
        os.rename(shard.path, trash)
        shutil.rmtree(trash)
        total -= shard.bytes
        deleted.append(shard.shard_id)
    return deleted
