"""Fine-tuned SAM3 checkpoints: the detector and tracker weights plus how to rebuild their
architecture, written atomically and verified on load.

A checkpoint names itself: its model_version is `<base version>-ft-<first 12 hex of the weights'
sha256>`, so every result made with it (`model_version` in the result records) says exactly
which weights made it.
"""
from __future__ import annotations

import hashlib
import inspect
import io
from dataclasses import replace
from pathlib import Path

import torch

from segmentation_node.atomic_io import atomic_write_bytes
from segmentation_node.sam3_backend.builder import Sam3Model, build_full_size_sam3_random, build_small_sam3
from segmentation_node.sam3_backend.device import default_device
from segmentation_node.sam3_backend.input_size import FULL_IMAGE_SIZE

FORMAT = "workcell_segmentation.sam3_finetune"
FORMAT_VERSION = 1
FINETUNE_MARK = "-ft-"
BUILDER_KINDS = ("small", "full")


class CheckpointError(ValueError):
    """The file is not a readable, intact fine-tune checkpoint; the message says why."""


def small_builder(**kwargs) -> dict:
    """The builder record of `build_small_sam3(**kwargs)`, every argument spelled out so a later
    change of the builder's defaults cannot silently change the rebuilt architecture."""
    defaults = {name: parameter.default
                for name, parameter in inspect.signature(build_small_sam3).parameters.items()
                if name != "device"}
    unknown = set(kwargs) - set(defaults)
    if unknown:
        raise ValueError(f"not build_small_sam3 architecture arguments: {sorted(unknown)}")
    return {"kind": "small", "kwargs": {**defaults, **kwargs}}


def weights_sha256(model: Sam3Model) -> str:
    return _sha256(model.detector.state_dict(), model.tracker.state_dict())


def finetuned_version(base_version: str, sha256: str) -> str:
    # A fine-tune of a fine-tune is named after the original base, not a growing chain.
    return f"{base_version.split(FINETUNE_MARK)[0]}{FINETUNE_MARK}{sha256[:12]}"


def save_checkpoint(model: Sam3Model, path: Path | str, builder: dict, extra: dict | None = None
                    ) -> str:
    """Write the model's weights to `path` (atomically: a reader never sees a torn file) and
    return the checkpoint's model_version. `builder` is `small_builder(...)` or
    `{"kind": "full"}`; `extra` (JSON-like: training report, data) is stored alongside."""
    if builder.get("kind") == "small":
        builder = small_builder(**builder.get("kwargs", {}))
    _check_builder(builder, model.image_size)
    detector_state = model.detector.state_dict()
    tracker_state = model.tracker.state_dict()
    sha = _sha256(detector_state, tracker_state)
    version = finetuned_version(model.model_version, sha)
    payload = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "builder": builder,
        "image_size": model.image_size, "base_model_version": model.model_version.split(FINETUNE_MARK)[0],
        "model_version": version, "weights_sha256": sha, "extra": extra or {},
        "detector": _to_cpu(detector_state), "tracker": _to_cpu(tracker_state),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getbuffer())
    return version


def read_checkpoint(path: Path | str) -> dict:
    """The checkpoint's payload (weights memory-mapped, not read), checked for format and
    integrity of its header. CheckpointError if missing, unreadable or not a fine-tune."""
    payload = _load_payload(Path(path))
    if not is_finetune_payload(payload):
        raise CheckpointError(f"{path} is a torch file but not a {FORMAT} checkpoint "
                              "(an original sam3.pt loads with build_sam3)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {payload.get('format_version')} "
                              f"is not supported (expected {FORMAT_VERSION})")
    missing = {"builder", "image_size", "model_version", "weights_sha256", "detector", "tracker"} - set(payload)
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {sorted(missing)}")
    return payload


def is_finetune_checkpoint(path: Path | str) -> bool:
    """True for a fine-tune checkpoint, False for another torch file (e.g. the original
    sam3.pt). CheckpointError if the file is missing or not a torch file at all."""
    return is_finetune_payload(_load_payload(Path(path)))


def is_finetune_payload(payload) -> bool:
    return isinstance(payload, dict) and payload.get("format") == FORMAT


def load_checkpoint(path: Path | str, device: torch.device | str | None = None) -> Sam3Model:
    """Rebuild the checkpoint's architecture, load its weights strictly and verify their sha256.
    The returned model's model_version is the checkpoint's."""
    payload = read_checkpoint(path)
    builder = payload["builder"]
    _check_builder(builder, payload["image_size"])
    device = torch.device(device) if device is not None else default_device()
    if builder["kind"] == "small":
        model = build_small_sam3(**builder["kwargs"], device=device)
    else:
        # Random init of the full architecture, then overwritten: nothing is downloaded.
        model = build_full_size_sam3_random(seed=0, device=device)
    for part in ("detector", "tracker"):
        try:
            getattr(model, part).load_state_dict(payload[part], strict=True)
        except RuntimeError as error:
            raise CheckpointError(f"{path}: {part} weights do not fit the {builder['kind']} "
                                  f"architecture: {error}") from error
    sha = weights_sha256(model)
    if sha != payload["weights_sha256"]:
        raise CheckpointError(f"{path}: weights are corrupt (sha256 {sha[:12]}, the checkpoint "
                              f"says {payload['weights_sha256'][:12]})")
    return replace(model, model_version=payload["model_version"])


def _load_payload(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint is empty: {path}")
    try:
        # weights_only: a checkpoint is data, never code to unpickle.
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, ValueError, EOFError, OSError) as error:
        raise CheckpointError(f"cannot read checkpoint {path} (corrupt or not a torch file): "
                              f"{error}") from error


def _check_builder(builder: dict, image_size: int) -> None:
    kind = builder.get("kind") if isinstance(builder, dict) else None
    if kind not in BUILDER_KINDS:
        raise CheckpointError(f"builder kind must be one of {BUILDER_KINDS}, got {builder!r}")
    expected = builder["kwargs"]["image_size"] if kind == "small" else FULL_IMAGE_SIZE
    if expected != image_size:
        raise CheckpointError(f"builder {builder} builds {expected}px models, the weights are "
                              f"for {image_size}px")


def _sha256(*states: dict[str, torch.Tensor]) -> str:
    """Digest of names, dtypes, shapes and raw bytes, so any changed value or layout differs."""
    digest = hashlib.sha256()
    for index, state in enumerate(states):
        for name in sorted(state):
            tensor = state[name].detach().to("cpu").contiguous()
            digest.update(f"{index}/{name}/{tensor.dtype}/{tuple(tensor.shape)}".encode())
            digest.update(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def _to_cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu") for name, tensor in state.items()}
