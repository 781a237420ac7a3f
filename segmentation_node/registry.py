"""workcell_registry: versioned models with checksums, release-gate results and a promotion history.

Layout (every file written atomically, a version directory renamed into place complete):

    <root>/models/<version>/manifest.json   checksums, parent, metrics, gate verdict
    <root>/models/<version>/weights.pt      a checkpoint (sam3_backend/checkpoint.py)
    <root>/models/<version>/release_report.{md,json}
    <root>/promoted.json                    the version robots should run + who promoted what, when
    <root>/.lock                            held by whoever changes the registry

Several training jobs and operators share one registry: registering, recording a gate result
and promoting take the registry's lock (a POSIX record lock: it also holds between machines on
a shared filesystem that supports them, as NFSv4 does), so nothing is lost or half written
between them. A registration that died leaves a `.staging-*` folder; the next change under the
lock removes it and says so. Every malformed file is one clear error naming it.

Only a version the release gate accepted can be promoted, and only with the report the gate
wrote for exactly those weights: the report records the weights' sha256, the manifest records
the report's sha256, and `verify` re-checks weights <-> manifest <-> report; the promotion history
records the report's hash. (The first deployment of a line may be forced ungated, and says so.)
Rollback promotes the version promoted before the current one.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
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
REPORT_JSON, LOCK = "release_report.json", ".lock"
ACCEPTED, REJECTED, UNEVALUATED = "accepted", "rejected", "unevaluated"
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_STAGING = ".staging-"


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
    report_sha256: str = ""  # of release_report.json, once the gate ran

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS


def _read_json(path: Path, what: str) -> dict:
    """A JSON object from `path`; RegistryError naming the file for anything else."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(f"{path} is missing ({what})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RegistryError(f"{path} is not a readable {what}: {type(error).__name__}: {error}") from None
    if not isinstance(data, dict):
        raise RegistryError(f"{path} is not a {what} (a JSON object expected, found {type(data).__name__})")
    return data


class ModelRegistry:
    def __init__(self, root: Path | str):
        self.root = Path(root).expanduser()
        self.notes: list[str] = []  # what the last change cleaned up (the CLI prints them)

    @contextlib.contextmanager
    def _locked(self):
        """The registry's lock, then leftovers of registrations that died cleaned up: while the
        lock is held nobody else is registering, so every staging folder is a dead one's."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK, "a+") as handle:
            fcntl.lockf(handle, fcntl.LOCK_EX)
            try:
                models = self.root / MODELS
                for leftover in sorted(models.glob(f"{_STAGING}*")) if models.is_dir() else []:
                    shutil.rmtree(leftover, ignore_errors=True)
                    self.notes.append(f"removed {leftover.name}, left by a registration that did not finish")
                yield
            finally:
                fcntl.lockf(handle, fcntl.LOCK_UN)

    # --- versions ----------------------------------------------------------------------------------
    def register(self, weights: Path | str, version: str, parent: str = "", notes: str = "") -> ModelEntry:
        """Copy a checkpoint in as a new, unevaluated version."""
        weights = Path(weights)
        if not _VERSION.match(version):
            raise RegistryError(f"version must be 1-128 of [A-Za-z0-9._-], starting alphanumeric; got {version!r}")
        if not weights.is_file():
            raise RegistryError(f"checkpoint not found: {weights}")
        with self._locked():
            final = self.root / MODELS / version
            if final.exists():
                raise RegistryError(f"version {version} is already registered; versions are immutable")
            staging = self.root / MODELS / f"{_STAGING}{version}-{os.getpid()}"
            staging.mkdir(parents=True)
            try:
                shutil.copyfile(weights, staging / WEIGHTS)
                fsync_file(staging / WEIGHTS)
                manifest = {"version": version, "sha256": file_sha256(staging / WEIGHTS),
                            "created_ns": time.time_ns(), "parent": parent, "verdict": UNEVALUATED,
                            "metrics": {}, "notes": notes}
                atomic_write_bytes(staging / MANIFEST, json.dumps(manifest, indent=1).encode())
                os.rename(staging, final)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            fsync_directory(final.parent)
        return self.entry(version)

    def record_gate(self, version: str, report: dict, files: dict[str, bytes] | None = None) -> ModelEntry:
        """Store the release gate's report (and other report files) with the version. The report
        must be for this version and these weights (`candidate`, `candidate_sha256`)."""
        verdict = report.get("verdict")
        if verdict not in (ACCEPTED, REJECTED):
            raise RegistryError(f"report verdict must be {ACCEPTED} or {REJECTED}, got {verdict!r}")
        with self._locked():
            entry = self.verify_weights(version)
            if report.get("candidate") != version or report.get("candidate_sha256") != entry.sha256:
                raise RegistryError(
                    f"{version}: the report is for {report.get('candidate')!r} with weights "
                    f"{str(report.get('candidate_sha256'))[:12]!r}, not these ({entry.sha256[:12]})")
            data = json.dumps(report, indent=1).encode()
            for name, content in (files or {}).items():
                atomic_write_bytes(entry.path / name, content)
            atomic_write_bytes(entry.path / REPORT_JSON, data)
            manifest = _read_json(entry.path / MANIFEST, "model manifest")
            manifest.update(verdict=verdict, metrics=report, report_sha256=hashlib.sha256(data).hexdigest(),
                            evaluated_ns=time.time_ns())
            atomic_write_bytes(entry.path / MANIFEST, json.dumps(manifest, indent=1).encode())
        return self.entry(version)

    def entry(self, version: str) -> ModelEntry:
        path = self.root / MODELS / version
        if not _VERSION.match(version) or not (path / MANIFEST).is_file():
            raise RegistryError(f"no model version {version!r} in {self.root} "
                                f"(registered: {', '.join(self._versions()) or 'none'})")
        manifest = _read_json(path / MANIFEST, "model manifest")
        try:
            return ModelEntry(str(manifest["version"]), path, str(manifest["sha256"]), int(manifest["created_ns"]),
                              str(manifest["parent"]), str(manifest["verdict"]), dict(manifest["metrics"]),
                              str(manifest.get("notes", "")), str(manifest.get("report_sha256", "")))
        except (KeyError, TypeError, ValueError) as error:
            raise RegistryError(f"{path / MANIFEST} is not a model manifest (bad or missing {error})") from None

    def entries(self) -> list[ModelEntry]:
        """Readable versions, oldest first (`scan` also names the unreadable ones)."""
        return self.scan()[0]

    def scan(self) -> tuple[list[ModelEntry], list[str]]:
        """(readable versions oldest first, why each unreadable one is), reading each manifest once."""
        found, problems = [], []
        for version in self._versions():
            try:
                found.append(self.entry(version))
            except RegistryError as error:
                problems.append(str(error))
        return sorted(found, key=lambda e: e.created_ns), problems

    def _versions(self) -> list[str]:
        models = self.root / MODELS
        return sorted(p.name for p in models.iterdir() if _VERSION.match(p.name) and (p / MANIFEST).is_file()) \
            if models.is_dir() else []

    def verify_weights(self, version: str) -> ModelEntry:
        """The entry, after checking its weights still match the manifest's checksum."""
        entry = self.entry(version)
        if not entry.weights.is_file():
            raise RegistryError(f"{version}: weights file missing ({entry.weights})")
        actual = file_sha256(entry.weights)
        if actual != entry.sha256:
            raise RegistryError(f"{version}: weights checksum {actual[:12]} does not match the manifest's "
                                f"{entry.sha256[:12]}; refusing a corrupted or altered model")
        return entry

    def verify(self, version: str) -> ModelEntry:
        """Weights <-> manifest, and for a gated version manifest <-> release report <-> weights."""
        entry = self.verify_weights(version)
        if entry.verdict == UNEVALUATED:
            return entry
        if entry.verdict not in (ACCEPTED, REJECTED):
            raise RegistryError(f"{version}: manifest verdict {entry.verdict!r} is not a gate verdict")
        report_path = entry.path / REPORT_JSON
        if not report_path.is_file():
            raise RegistryError(f"{version}: verdict '{entry.verdict}' but no release report ({REPORT_JSON}): "
                                "the release gate never ran on it")
        actual = file_sha256(report_path)
        if actual != entry.report_sha256:
            raise RegistryError(f"{version}: {REPORT_JSON} ({actual[:12]}) is not the report the gate recorded "
                                f"({entry.report_sha256[:12] or 'none'})")
        report = _read_json(report_path, "release report")
        if report.get("candidate_sha256") != entry.sha256 or report.get("verdict") != entry.verdict:
            raise RegistryError(f"{version}: the release report judged weights "
                                f"{str(report.get('candidate_sha256'))[:12]} ({report.get('verdict')}), "
                                f"not these ({entry.sha256[:12]}, {entry.verdict})")
        return entry

    # --- promotion ---------------------------------------------------------------------------------
    def promote(self, version: str, by: str, reason: str, force_ungated: bool = False) -> ModelEntry:
        with self._locked():
            entry = self.verify(version)
            if entry.verdict != ACCEPTED and not (force_ungated and entry.verdict == UNEVALUATED
                                                  and self.promoted() is None):
                raise RegistryError(f"{version} cannot be promoted: release gate verdict is '{entry.verdict}' "
                                    "(only accepted models; an ungated first deployment needs --force-ungated)")
            self._append_history(entry, by, reason if entry.verdict == ACCEPTED
                                 else f"UNGATED first deployment: {reason}")
        return entry

    def promoted(self) -> ModelEntry | None:
        history = self.history()
        return self.entry(history[-1]["version"]) if history else None

    def history(self) -> list[dict]:
        path = self.root / PROMOTED
        if not path.is_file():
            return []
        history = _read_json(path, "promotion history").get("history")
        if not isinstance(history, list) or not all(isinstance(h, dict) and "version" in h for h in history):
            raise RegistryError(f"{path} is not a promotion history (a list of promotions under 'history')")
        return history

    def rollback(self, by: str, reason: str) -> ModelEntry:
        """Promote again the version that was promoted before the current one."""
        with self._locked():
            history = self.history()
            current = history[-1]["version"] if history else None
            earlier = [h["version"] for h in history if h["version"] != current]
            if not earlier:
                raise RegistryError("nothing to roll back to: only one version was ever promoted")
            entry = self.verify(earlier[-1])
            self._append_history(entry, by, f"rollback from {current}: {reason}")
        return entry

    def _append_history(self, entry: ModelEntry, by: str, reason: str) -> None:
        """Called with the lock held: read, append, write is one step for every other writer."""
        if not by.strip():
            raise RegistryError("who promotes must be recorded (--by)")
        history = self.history() + [{"version": entry.version, "by": by.strip(), "reason": reason,
                                     "at_ns": time.time_ns(), "weights_sha256": entry.sha256,
                                     "report_sha256": entry.report_sha256}]
        atomic_write_bytes(self.root / PROMOTED, json.dumps({"version": entry.version, "history": history},
                                                            indent=1).encode())


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
    for name, help_text in (("promote", "promote an accepted version"), ("verify", "check weights <-> manifest <-> release report")):
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
            entries, problems = registry.scan()
            for entry in entries:
                mark = "**current**" if promoted and entry.version == promoted.version else ""
                print(f"| {entry.version} | {entry.parent or '-'} | {entry.verdict} | {entry.sha256[:12]} | {mark} |")
            for problem in problems:
                print(f"workcell_registry: unreadable: {problem}", file=sys.stderr)
        elif args.command == "register":
            entry = registry.register(args.weights, args.version, args.parent, args.notes)
            print(f"registered {entry.version} ({entry.sha256[:12]})")
        elif args.command == "promote":
            print(f"promoted {registry.promote(args.version, args.by, args.reason, args.force_ungated).version}")
        elif args.command == "verify":
            entry = registry.verify(args.version)
            print(f"{entry.version}: weights, manifest" + (" and release report agree" if entry.report_sha256
                                                          else " agree (not gated yet)"))
        else:
            print(f"rolled back to {registry.rollback(args.by, args.reason).version}")
    except (RegistryError, OSError) as error:  # a full disk or a permission: one line too
        print(f"workcell_registry: {error}", file=sys.stderr)
        return 2
    finally:
        for note in registry.notes:
            print(f"workcell_registry: {note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
