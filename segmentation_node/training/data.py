"""Training data: COCO directories (synthetic exports, flywheel shards) -> frames, held-out
splits by correlated units, track clips, and the square model-input tensors.

A COCO directory is `annotations.json` + images as `segmentation_node.synthetic.export.CocoWriter`
writes it. Flywheel shards carry `audit.json`; only an "accepted" verdict is trained on, and a
directory without one (synthetic ground truth) only when the caller allows unaudited data.
"""
from __future__ import annotations

import json
import logging
import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Iterable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as coco_mask

from segmentation_node.masks import bounding_box, mask_from_counts

log = logging.getLogger(__name__)

ANNOTATIONS_FILE = "annotations.json"
AUDIT_FILE = "audit.json"
ACCEPTED = "accepted"
PSEUDO_LABEL = "pseudo_label"
GROUND_TRUTH = "ground_truth"
SPLIT_KINDS = ("run", "camera", "time", "sku")


class DataError(ValueError):
    """Unusable training data; the message names the directory and the problem."""


@dataclass(frozen=True, eq=False)
class Instance:
    track_id: int
    label: str
    attributes: tuple[str, ...]
    segmentation: dict  # COCO RLE, compressed ("counts" string) or not (list of runs)
    source: str


@dataclass(frozen=True, eq=False)
class AnnotatedObject:
    """An instance with its decoded (possibly augmented) mask."""

    track_id: int
    label: str
    attributes: tuple[str, ...]
    mask: np.ndarray  # H x W bool, never empty

    @property
    def box(self) -> tuple[float, float, float, float]:
        return mask_box(self.mask)


@dataclass(frozen=True, eq=False)
class Frame:
    shard: str
    image_path: Path
    width: int
    height: int
    run: str
    camera: str
    frame_index: int
    stamp_ns: int
    instances: tuple[Instance, ...]
    # Every object of every known class is annotated, so an absent class is a true negative.
    # False for pseudo-labelled shards: the labeller logs only what it detected confidently.
    exhaustive: bool

    def image(self) -> np.ndarray:
        bgr = cv2.imread(str(self.image_path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DataError(f"cannot read image {self.image_path}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def masks(self) -> np.ndarray:
        """N x H x W bool, one per instance, in instance order."""
        masks = [decode_segmentation(i.segmentation, self.height, self.width) for i in self.instances]
        return np.stack(masks) if masks else np.zeros((0, self.height, self.width), bool)


@dataclass(frozen=True)
class SkippedShard:
    path: str
    reason: str


@dataclass(eq=False)
class TrainingData:
    frames: list[Frame]
    shards: list[str]
    skipped: list[SkippedShard]
    unknown_labels: dict[str, int]  # annotations dropped because the ontology lacks their label


@dataclass(eq=False)
class Split:
    by: str
    train: list[Frame]
    held_out: list[Frame]
    train_units: tuple[str, ...]
    held_out_units: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class TrackClip:
    """Consecutive frames of one camera stream, and the tracks visible in its first frame."""

    frames: tuple[Frame, ...]
    track_ids: tuple[int, ...]


def decode_segmentation(segmentation: dict, height: int, width: int) -> np.ndarray:
    counts = segmentation.get("counts")
    if isinstance(counts, list):
        return mask_from_counts(counts, height, width)
    if not isinstance(counts, str) or list(segmentation.get("size", ())) != [height, width]:
        raise DataError(f"segmentation must be a COCO RLE of size {[height, width]}, got "
                        f"size {segmentation.get('size')} and counts of type {type(counts).__name__}")
    return coco_mask.decode({"size": [height, width], "counts": counts.encode("ascii")}).astype(bool)


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Pixel extent (x0, y0, x1, y1) of a non-empty mask; x1/y1 exclusive."""
    box = bounding_box(mask)
    if box is None:
        raise ValueError("empty mask has no box")
    rows, columns = box
    return float(columns.start), float(rows.start), float(columns.stop), float(rows.stop)


def annotated_objects(instances: Sequence[Instance], masks: np.ndarray) -> list[AnnotatedObject]:
    """Instances paired with (augmented) masks; instances whose mask vanished are dropped."""
    return [AnnotatedObject(i.track_id, i.label, i.attributes, mask)
            for i, mask in zip(instances, masks) if mask.any()]


def coco_directories(paths: Iterable[Path | str]) -> list[Path]:
    """Each path is a COCO directory or holds COCO directories one level down (a flywheel root
    with one shard per subdirectory, or a workcell_synth output with coco/ inside)."""
    found = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise DataError(f"data directory not found: {path}")
        if (path / ANNOTATIONS_FILE).is_file():
            found.append(path)
            continue
        children = sorted(child for child in path.iterdir() if (child / ANNOTATIONS_FILE).is_file())
        if not children:
            raise DataError(f"{path}: no {ANNOTATIONS_FILE} in it or in its subdirectories")
        found += children
    return found


def audit_refusal(directory: Path, allow_unaudited: bool) -> str | None:
    """Why this directory must not be trained on, or None when it may."""
    audit = directory / AUDIT_FILE
    if not audit.exists():
        if allow_unaudited:
            return None
        return (f"no {AUDIT_FILE}: unaudited data is refused unless --allow-unaudited is given "
                "(meant for ground truth such as synthetic exports)")
    try:
        verdict = json.loads(audit.read_text(encoding="utf-8"))["verdict"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"{AUDIT_FILE} unreadable ({type(error).__name__}: {error})"
    if verdict != ACCEPTED:
        return f"audit verdict is {verdict!r}, not {ACCEPTED!r}"
    return None


def load_coco_directory(directory: Path, labels: Collection[str] | None = None
                        ) -> tuple[list[Frame], Counter]:
    """Frames of one COCO directory and the count of annotations dropped per label unknown to
    `labels` (None keeps all). DataError if the directory is malformed."""
    try:
        dataset = json.loads((directory / ANNOTATIONS_FILE).read_text(encoding="utf-8"))
        categories = {c["id"]: c["name"] for c in dataset["categories"]}
        by_image: dict[int, list[dict]] = defaultdict(list)
        for annotation in dataset["annotations"]:
            by_image[annotation["image_id"]].append(annotation)
        sources = {a.get("source", GROUND_TRUTH) for a in dataset["annotations"]}
        exhaustive = PSEUDO_LABEL not in sources
        unknown: Counter = Counter()
        frames = []
        for record in dataset["images"]:
            instances = []
            for annotation in by_image[record["id"]]:
                label = categories[annotation["category_id"]]
                if labels is not None and label not in labels:
                    unknown[label] += 1
                    continue
                instances.append(Instance(int(annotation["track_id"]), label,
                                          tuple(annotation.get("attributes", ())),
                                          annotation["segmentation"],
                                          annotation.get("source", GROUND_TRUTH)))
            frames.append(Frame(
                shard=str(directory), image_path=directory / record["file_name"],
                width=int(record["width"]), height=int(record["height"]),
                run=str(record.get("run", directory.name)), camera=str(record["camera"]),
                frame_index=int(record["frame_index"]), stamp_ns=int(record["stamp_ns"]),
                instances=tuple(instances), exhaustive=exhaustive))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"{directory}: malformed COCO directory ({type(error).__name__}: {error})"
                        ) from error
    missing = [str(frame.image_path) for frame in frames if not frame.image_path.is_file()]
    if missing:
        raise DataError(f"{directory}: {len(missing)} image file(s) missing, e.g. {missing[0]}")
    return frames, unknown


def load_training_data(paths: Iterable[Path | str], allow_unaudited: bool,
                       labels: Collection[str] | None = None) -> TrainingData:
    """Every usable COCO directory under `paths`; refused or malformed ones are skipped and
    logged with the reason (and listed in the result), never trained on."""
    frames: list[Frame] = []
    shards: list[str] = []
    skipped: list[SkippedShard] = []
    unknown: Counter = Counter()
    for directory in coco_directories(paths):
        reason = audit_refusal(directory, allow_unaudited)
        if reason is None:
            try:
                shard_frames, shard_unknown = load_coco_directory(directory, labels)
            except DataError as error:
                reason = str(error)
        if reason is not None:
            log.warning("skipping %s: %s", directory, reason)
            skipped.append(SkippedShard(str(directory), reason))
            continue
        frames += shard_frames
        unknown += shard_unknown
        shards.append(str(directory))
    if unknown:
        log.warning("dropped annotations of labels the ontology does not know: %s", dict(unknown))
    return TrainingData(frames, shards, skipped, dict(unknown))


def frame_units(frame: Frame, by: str, sku_labels: Collection[str] = ()) -> frozenset[str]:
    """The correlated units a frame belongs to under a split: its run, its camera, or the SKUs
    (pickable classes) it shows. Frames of one unit are near-duplicates of each other."""
    if by == "run":
        return frozenset((frame.run,))
    if by == "camera":
        return frozenset((frame.camera,))
    if by == "sku":
        return frozenset(i.label for i in frame.instances if i.label in sku_labels)
    raise ValueError(f"no units for split {by!r}")


def split_frames(frames: Sequence[Frame], by: str, held_out_fraction: float = 0.2, seed: int = 0,
                 sku_labels: Collection[str] = ()) -> Split:
    """Hold out whole units (runs, cameras, SKUs, or the latest stretch of time) so no unit
    is seen on both sides; a random frame split would leak near-identical frames."""
    if by not in SPLIT_KINDS:
        raise ValueError(f"split must be one of {SPLIT_KINDS}, got {by!r}")
    if not 0.0 < held_out_fraction < 1.0:
        raise ValueError(f"held-out fraction must be in (0, 1), got {held_out_fraction}")
    if by == "time":
        return _split_by_time(frames, held_out_fraction)
    units = {frame: frame_units(frame, by, sku_labels) for frame in frames}  # by identity
    frames_per_unit = Counter(unit for frame_set in units.values() for unit in frame_set)
    if len(frames_per_unit) < 2:
        raise DataError(f"split by {by} needs at least 2 {by}s in the data, found "
                        f"{sorted(frames_per_unit) or 'none'}")
    order = sorted(frames_per_unit)
    random.Random(seed).shuffle(order)
    held_units: set[str] = set()
    for unit in order[:-1]:  # the last unit always stays for training
        held_units.add(unit)
        held = sum(1 for frame in frames if units[frame] & held_units)
        if held >= held_out_fraction * len(frames):
            break
    held_out = [frame for frame in frames if units[frame] & held_units]
    train = [frame for frame in frames if not units[frame] & held_units]
    if not train:
        raise DataError(f"split by {by}: every frame shows a held-out {by} "
                        f"({sorted(held_units)}); no training frames are left")
    train_units = sorted(set().union(*(units[frame] for frame in train)))
    return Split(by, train, held_out, tuple(train_units), tuple(sorted(held_units)))


def _split_by_time(frames: Sequence[Frame], held_out_fraction: float) -> Split:
    """Train on the past, evaluate on the future: frames from the cut stamp on are held out
    (all views of a frame set share a stamp, so they stay together)."""
    stamps = sorted({frame.stamp_ns for frame in frames})
    if len(stamps) < 2:
        raise DataError("split by time needs frames with at least 2 distinct stamps")
    cut = stamps[min(len(stamps) - 1, max(1, math.floor(len(stamps) * (1.0 - held_out_fraction))))]
    train = [frame for frame in frames if frame.stamp_ns < cut]
    held_out = [frame for frame in frames if frame.stamp_ns >= cut]
    return Split("time", train, held_out, (f"stamp_ns < {cut}",), (f"stamp_ns >= {cut}",))


def track_clips(frames: Sequence[Frame], length: int, stride: int = 1) -> list[TrackClip]:
    """Windows of `length` consecutive frames (frame_index + 1 each) of one camera of one run
    whose first frame shows at least one track."""
    if length < 2 or stride < 1:
        raise ValueError(f"clip length must be >= 2 and stride >= 1, got {length}, {stride}")
    streams: dict[tuple[str, str], list[Frame]] = defaultdict(list)
    for frame in frames:
        streams[(frame.run, frame.camera)].append(frame)
    clips = []
    for key in sorted(streams):
        stream = sorted(streams[key], key=lambda frame: frame.frame_index)
        for start in range(0, len(stream) - length + 1, stride):
            window = stream[start:start + length]
            consecutive = all(b.frame_index - a.frame_index == 1 for a, b in zip(window, window[1:]))
            track_ids = tuple(sorted({i.track_id for i in window[0].instances}))
            if consecutive and track_ids:
                clips.append(TrackClip(tuple(window), track_ids))
    return clips


def model_masks(masks: np.ndarray, size: int, device: torch.device) -> torch.Tensor:
    """N x H x W bool -> N x size x size bool, squashed like the image (see preprocess_image)."""
    if not len(masks):
        return torch.zeros((0, size, size), dtype=torch.bool, device=device)
    resized = F.interpolate(torch.from_numpy(masks).to(device)[:, None].float(), size=(size, size),
                            mode="bilinear", align_corners=False, antialias=True)
    return resized[:, 0] >= 0.5


def evenly_spaced(items: Sequence, limit: int) -> list:
    """At most `limit` items spread over the sequence: a fixed, representative subset."""
    if len(items) <= limit:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]
