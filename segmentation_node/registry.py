"""workcell_registry: versioned models with checksums, release-gate results and a promotion history.

Layout (every file written atomically, a version directory renamed into place complete):

    <root>/models/<version>/manifest.json   checksums, parent, metrics, gate verdict
    <root>/models/<version>/weights.pt      a checkpoint (sam3_backend/checkpoint.py)
    <root>/models/<version>/release_report.{md,json}
    <root>/promoted.json                    the version robots should run + who promoted what, when

Only a version the release gate accepted can be promoted (the first deployment of a line may be
forced, and says so in the history). Rollback promotes the version promoted before the current one.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from segmentation_node.atomic_io import atomic_write_bytes, file_sha256, fsync_directory, fsync_file

MODELS, PROMOTED, MANIFEST, WEIGHTS = "models", "promoted.json", "manifest.json", "weights.pt"
ACCEPTED, REJECTED, UNEVALUATED = "accepted", "rejected", "unevaluated"
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RegistryError(ValueError):
    pass


@dataclass(frozen=True)
class ModelEntry:
    version: str
    path: Path
    sha256: str
    created_ns: int
    parent: str
    verdict: str
    metrics: dict = field(default_factory=dict)
    notes: str = ""

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS


class ModelRegistry:
    def __init__(self, root: Path | str):
        self.root = Path(root).expanduser()

    # --- versions ----------------------------------------------------------------------------------
    def register(self, weights: Path | str, version: str, parent: str = "", notes: str = "") -> ModelEntry:
        """Copy a checkpoint in as a new, unevaluated version."""
        weights = Path(weights)
        if not _VERSION.match(version):
            raise RegistryError(f"version must be 1-128 of [A-Za-z0-9._-], starting alphanumeric; got {version!r}")
        if not weights.is_file():
            raise RegistryError(f"checkpoint not found: {weights}")
        final = self.root / MODELS / version
        if final.exists():
            raise RegistryError(f"version {version} is already registered; versions are immutable")
        staging = self.root / MODELS / f".staging-{version}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        shutil.copyfile(weights, staging / WEIGHTS)
        fsync_file(staging / WEIGHTS)
        manifest = {"version": version, "sha256": file_sha256(staging / WEIGHTS), "created_ns": time.time_ns(),
                    "parent": parent, "verdict": UNEVALUATED, "metrics": {}, "notes": notes}
        atomic_write_bytes(staging / MANIFEST, json.dumps(manifest, indent=1).encode())
        os.rename(staging, final)
        fsync_directory(final.parent)
        return self.entry(version)

    def record_gate(self, version: str, verdict: str, metrics: dict, reports: dict[str, bytes]) -> ModelEntry:
        """Store the release gate's verdict, metrics and report files with the version."""
        if verdict not in (ACCEPTED, REJECTED):
            raise RegistryError(f"verdict must be {ACCEPTED} or {REJECTED}, got {verdict!r}")
        entry = self.entry(version)
        for name, data in reports.items():
            atomic_write_bytes(entry.path / name, data)
        manifest = json.loads((entry.path / MANIFEST).read_text())
        manifest.update(verdict=verdict, metrics=metrics, evaluated_ns=time.time_ns())
        atomic_write_bytes(entry.path / MANIFEST, json.dumps(manifest, indent=1).encode())
        return self.entry(version)

    def entry(self, version: str) -> ModelEntry:
        path = self.root / MODELS / version
        if not _VERSION.match(version) or not (path / MANIFEST).is_file():
            known = ", ".join(e.version for e in self.entries()) or "none"
            raise RegistryError(f"no model version {version!r} in {self.root} (registered: {known})")
        manifest = json.loads((path / MANIFEST).read_text())
        return ModelEntry(manifest["version"], path, manifest["sha256"], manifest["created_ns"], manifest["parent"],
                          manifest["verdict"], manifest["metrics"], manifest.get("notes", ""))

    def entries(self) -> list[ModelEntry]:
        models = self.root / MODELS
        versions = [p.name for p in models.iterdir() if (p / MANIFEST).is_file()] if models.is_dir() else []
        return sorted((self.entry(v) for v in versions), key=lambda e: e.created_ns)

    def verify(self, version: str) -> ModelEntry:
        """The entry, after checking its weights still match the manifest's checksum."""
        entry = self.entry(version)
        if not entry.weights.is_file():
            raise RegistryError(f"{version}: weights file missing ({entry.weights})")
        actual = file_sha256(entry.weights)
        if actual != entry.sha256:
            raise RegistryError(f"{version}: weights checksum {actual[:12]} does not match the manifest's "
                                f"{entry.sha256[:12]}; refusing a corrupted or altered model")
        return entry

    # --- promotion ---------------------------------------------------------------------------------
    def promote(self, version: str, by: str, reason: str, force_ungated: bool = False) -> ModelEntry:
        entry = self.verify(version)
        if entry.verdict != ACCEPTED and not (force_ungated and entry.verdict == UNEVALUATED
                                              and self.promoted() is None):
            raise RegistryError(f"{version} cannot be promoted: release gate verdict is '{entry.verdict}' "
                                "(only accepted models; an ungated first deployment needs --force-ungated)")
        self._append_history(version, by, reason if entry.verdict == ACCEPTED else f"UNGATED first deployment: {reason}")
        return entry

    def promoted(self) -> ModelEntry | None:
        history = self.history()
        return self.entry(history[-1]["version"]) if history else None

    def history(self) -> list[dict]:
        path = self.root / PROMOTED
        return json.loads(path.read_text())["history"] if path.is_file() else []

    def rollback(self, by: str, reason: str) -> ModelEntry:
        """Promote again the version that was promoted before the current one."""
        history = self.history()
        current = history[-1]["version"] if history else None
        earlier = [h["version"] for h in history if h["version"] != current]
        if not earlier:
            raise RegistryError("nothing to roll back to: only one version was ever promoted")
        entry = self.verify(earlier[-1])
        self._append_history(entry.version, by, f"rollback from {current}: {reason}")
        return entry

    def _append_history(self, version: str, by: str, reason: str) -> None:
        if not by.strip():
            raise RegistryError("who promotes must be recorded (--by)")
        history = self.history() + [{"version": version, "by": by.strip(), "reason": reason, "at_ns": time.time_ns()}]
        atomic_write_bytes(self.root / PROMOTED, json.dumps({"version": version, "history": history}, indent=1).encode())


def load_registered_model(registry: ModelRegistry, version: str = "", device=None):
    """(entry, Sam3Model) of `version`, or of the promoted version when empty; checksum verified."""
    from segmentation_node.sam3_backend.checkpoint import load_checkpoint

    if not version:
        promoted = registry.promoted()
        if promoted is None:
            raise RegistryError(f"{registry.root} has no promoted model yet (workcell_registry promote)")
        version = promoted.version
    entry = registry.verify(version)
    return entry, load_checkpoint(entry.weights, device=device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workcell_registry", description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, required=True, help="registry directory")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="versions, verdicts and what is promoted")
    register = commands.add_parser("register", help="add a checkpoint as a new version")
    register.add_argument("weights", type=Path)
    register.add_argument("--version", required=True)
    register.add_argument("--parent", default="")
    register.add_argument("--notes", default="")
    for name, help_text in (("promote", "promote an accepted version"), ("verify", "check a version's checksum")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("version")
        if name == "promote":
            command.add_argument("--by", required=True)
            command.add_argument("--reason", required=True)
            command.add_argument("--force-ungated", action="store_true",
                                 help="first deployment of a line only: no previous model to gate against")
    rollback = commands.add_parser("rollback", help="promote the previously promoted version again")
    rollback.add_argument("--by", required=True)
    rollback.add_argument("--reason", required=True)
    args = parser.parse_args(argv)
    registry = ModelRegistry(args.registry)
    try:
        if args.command == "list":
            promoted = registry.promoted()
            print("| version | parent | verdict | sha256 | promoted |\n|---|---|---|---|---|")
            for entry in registry.entries():
                mark = "**current**" if promoted and entry.version == promoted.version else ""
                print(f"| {entry.version} | {entry.parent or '-'} | {entry.verdict} | {entry.sha256[:12]} | {mark} |")
        elif args.command == "register":
            entry = registry.register(args.weights, args.version, args.parent, args.notes)
            print(f"registered {entry.version} ({entry.sha256[:12]})")
        elif args.command == "promote":
            print(f"promoted {registry.promote(args.version, args.by, args.reason, args.force_ungated).version}")
        elif args.command == "verify":
            print(f"{registry.verify(args.version).version}: checksum ok")
        else:
            print(f"rolled back to {registry.rollback(args.by, args.reason).version}")
    except RegistryError as error:
        print(f"workcell_registry: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
