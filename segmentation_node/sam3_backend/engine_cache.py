"""On-disk cache of TensorRT engines, keyed by everything that makes a plan valid.

A serialized engine (plan) only runs on the GPU model, TensorRT version and shapes it was built
for, and it encodes the ONNX graph, the precision and the builder options. `EngineKey` holds
all of them; its digest names the cache entry:

    <cache>/<stage>/<digest>/engine.plan
    <cache>/<stage>/<digest>/key.json    (the key, the plan's size and sha256, creation time)

An entry is written in a hidden temporary folder and renamed into place whole, so a crash
leaves no half entry under a digest name; an entry whose key.json is unreadable or whose plan
does not match its recorded size and sha256 is ignored (and replaced on the next store).
Lookup returns a plan only for an exact key match. No TensorRT import: usable anywhere.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

from segmentation_node.atomic_io import file_sha256, fsync_directory, write_synced

PRECISIONS = ("fp32", "fp16", "int8", "fp8")
PLAN_FILE = "engine.plan"
KEY_FILE = "key.json"
KEY_FORMAT = 1

OptionValue = str | int | float | bool | None


@dataclass(frozen=True)
class EngineKey:
    """Everything a built engine depends on. Build with `EngineKey.create`."""

    stage: str
    onnx_sha256: str
    gpu_name: str
    compute_capability: str  # "major.minor", e.g. "9.0"
    tensorrt_version: str
    precision: str
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...]  # sorted by input name
    builder_options: tuple[tuple[str, OptionValue], ...]  # sorted by option name

    @classmethod
    def create(cls, stage: str, onnx_sha256: str, gpu_name: str, compute_capability: str,
               tensorrt_version: str, precision: str, input_shapes: Mapping[str, Sequence[int]],
               builder_options: Mapping[str, OptionValue] | None = None) -> EngineKey:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
        if not stage or "/" in stage or stage.startswith("."):
            raise ValueError(f"invalid stage name '{stage}'")
        shapes = tuple(sorted((name, tuple(int(d) for d in shape))
                              for name, shape in input_shapes.items()))
        options = tuple(sorted((builder_options or {}).items()))
        return cls(stage, onnx_sha256, gpu_name, compute_capability, tensorrt_version, precision,
                   shapes, options)

    def to_json(self) -> dict:
        return {"stage": self.stage, "onnx_sha256": self.onnx_sha256, "gpu_name": self.gpu_name,
                "compute_capability": self.compute_capability,
                "tensorrt_version": self.tensorrt_version, "precision": self.precision,
                "input_shapes": {name: list(shape) for name, shape in self.input_shapes},
                "builder_options": dict(self.builder_options)}

    @classmethod
    def from_json(cls, data: Mapping) -> EngineKey:
        return cls.create(data["stage"], data["onnx_sha256"], data["gpu_name"],
                          data["compute_capability"], data["tensorrt_version"], data["precision"],
                          data["input_shapes"], data["builder_options"])

    def digest(self) -> str:
        """Stable across processes and Python versions: sha256 of canonical JSON."""
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    key: EngineKey
    plan_path: Path
    created: float  # seconds since the epoch


class EngineCache:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    def entry_dir(self, key: EngineKey) -> Path:
        return self.root / key.stage / key.digest()

    def lookup(self, key: EngineKey) -> Path | None:
        """The plan of a valid entry whose key equals `key` exactly, else None."""
        entry = self._read_entry(self.entry_dir(key))
        return entry.plan_path if entry is not None and entry.key == key else None

    def store(self, key: EngineKey, plan: bytes) -> Path:
        """Publish `plan` under `key` atomically; returns the plan's path. An invalid entry at
        the same digest is replaced; a valid one (a concurrent builder won) is kept."""
        final = self.entry_dir(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
        try:
            write_synced(staging / PLAN_FILE, plan)
            record = {"format": KEY_FORMAT, "key": key.to_json(), "digest": key.digest(),
                      "plan_bytes": len(plan), "plan_sha256": hashlib.sha256(plan).hexdigest(),
                      "created": time.time()}
            write_synced(staging / KEY_FILE, (json.dumps(record, indent=2) + "\n").encode())
            fsync_directory(staging)
            if final.exists() and self.lookup(key) is None:
                _remove_aside(final)  # torn or corrupt
            try:
                os.rename(staging, final)
            except OSError:
                if self.lookup(key) is None:  # not another builder's valid entry
                    raise
            else:
                fsync_directory(final.parent)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return final / PLAN_FILE

    def get_or_build(self, key: EngineKey, build: Callable[[], bytes]) -> tuple[Path, bool]:
        """The cached plan for `key`, building and storing it first when there is none.
        Returns (plan path, whether it was built now)."""
        cached = self.lookup(key)
        if cached is not None:
            return cached, False
        return self.store(key, build()), True

    def entries(self, stage: str) -> list[CacheEntry]:
        """Valid entries of a stage, newest first."""
        stage_dir = self.root / stage
        if not stage_dir.is_dir():
            return []
        found = [self._read_entry(path) for path in stage_dir.iterdir()
                 if path.is_dir() and not path.name.startswith(".")]
        return sorted((entry for entry in found if entry is not None), key=lambda e: -e.created)

    def describe(self, key: EngineKey) -> str:
        """Why `key` needs a build (or that it does not), compared with the stage's newest
        entry: the key fields that differ, old -> new."""
        if self.lookup(key) is not None:
            return f"{key.stage}: cached engine {key.digest()[:12]} matches"
        entries = self.entries(key.stage)
        if not entries:
            return f"{key.stage}: no cached engine for this stage: build"
        newest = entries[0]
        changes = [f"{name} {_short(old)} -> {_short(new)}"
                   for name, old, new in _differences(newest.key, key)]
        built = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(newest.created))
        return (f"{key.stage}: rebuild: {'; '.join(changes)} (vs newest cached engine "
                f"{newest.key.digest()[:12]} of {built})")

    def _read_entry(self, path: Path) -> CacheEntry | None:
        """The entry at `path` if complete and consistent, else None."""
        try:
            record = json.loads((path / KEY_FILE).read_text())
            key = EngineKey.from_json(record["key"])
            plan_path = path / PLAN_FILE
            valid = (record["format"] == KEY_FORMAT and key.digest() == path.name
                     and plan_path.stat().st_size == record["plan_bytes"]
                     and file_sha256(plan_path) == record["plan_sha256"])
            return CacheEntry(key, plan_path, float(record["created"])) if valid else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None


def _differences(old: EngineKey, new: EngineKey) -> Iterator[tuple[str, object, object]]:
    for field in fields(EngineKey):
        before, after = getattr(old, field.name), getattr(new, field.name)
        if field.name in ("input_shapes", "builder_options"):
            before, after = dict(before), dict(after)
            for name in sorted(set(before) | set(after)):
                if before.get(name) != after.get(name):
                    yield (f"{field.name}[{name}]", before.get(name, "unset"),
                           after.get(name, "unset"))
        elif before != after:
            yield field.name, before, after


def _short(value: object) -> str:
    """sha256 hex digests shortened; shapes as 2x3x112x112."""
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]
    if isinstance(value, tuple):
        return "x".join(map(str, value))
    return str(value)


def _remove_aside(path: Path) -> None:
    """Rename first (atomic), delete after: readers never see a partly deleted entry."""
    aside = Path(tempfile.mkdtemp(prefix=".old-", dir=path.parent))
    os.rename(path, aside / path.name)
    shutil.rmtree(aside, ignore_errors=True)
