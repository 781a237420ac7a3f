"""Model registry: immutable versions, checksums, gate-only promotion, rollback. ROS-free; the
weights are opaque bytes here (loading real checkpoints is tested with the node)."""
from __future__ import annotations

import json

import pytest

from segmentation_node.registry import ModelRegistry, RegistryError, main


@pytest.fixture()
def registry(tmp_path):
    registry = ModelRegistry(tmp_path / "registry")
    for version in ("v1", "v2", "v3"):
        weights = tmp_path / f"{version}.pt"
        weights.write_bytes(version.encode() * 100)
        registry.register(weights, version, parent="v0")
    return registry


def test_versions_are_immutable_and_named_safely(registry, tmp_path):
    with pytest.raises(RegistryError, match="immutable"):
        registry.register(tmp_path / "v1.pt", "v1")
    with pytest.raises(RegistryError, match="version must be"):
        registry.register(tmp_path / "v1.pt", "../escape")
    with pytest.raises(RegistryError, match="not found"):
        registry.register(tmp_path / "missing.pt", "v9")
    assert [e.version for e in registry.entries()] == ["v1", "v2", "v3"]
    assert not list((registry.root / "models").glob(".staging-*"))


def test_only_gate_accepted_versions_are_promoted(registry):
    with pytest.raises(RegistryError, match="release gate verdict is 'unevaluated'"):
        registry.promote("v1", "ana", "first")
    assert registry.promote("v1", "ana", "line bring-up", force_ungated=True).version == "v1"
    assert "UNGATED" in registry.history()[-1]["reason"]
    with pytest.raises(RegistryError, match="unevaluated"):
        registry.promote("v2", "ana", "second", force_ungated=True)  # only the first deployment
    registry.record_gate("v2", "rejected", {"forbidden_recall": 0.1}, {"release_report.md": b"# rejected"})
    with pytest.raises(RegistryError, match="'rejected'"):
        registry.promote("v2", "ana", "try anyway")
    registry.record_gate("v3", "accepted", {"forbidden_recall": 0.99}, {"release_report.md": b"# ok"})
    assert registry.promote("v3", "ana", "gate passed").version == "v3"
    assert registry.promoted().metrics == {"forbidden_recall": 0.99}
    assert (registry.entry("v3").path / "release_report.md").read_bytes() == b"# ok"


def test_rollback_and_tamper_detection(registry):
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback("ana", "x")
    registry.promote("v1", "ana", "bring-up", force_ungated=True)
    registry.record_gate("v2", "accepted", {}, {})
    registry.promote("v2", "ana", "better")
    assert registry.rollback("ben", "mis-picks on line 3").version == "v1"
    assert registry.promoted().version == "v1"
    assert [h["by"] for h in registry.history()] == ["ana", "ana", "ben"]
    registry.entry("v2").weights.write_bytes(b"tampered")
    with pytest.raises(RegistryError, match="does not match"):
        registry.promote("v2", "ana", "again")
    with pytest.raises(RegistryError, match="no model version 'nope'"):
        registry.entry("nope")


def test_cli(registry, capsys):
    root = str(registry.root)
    assert main(["--registry", root, "promote", "v1", "--by", "ana", "--reason", "x", "--force-ungated"]) == 0
    assert main(["--registry", root, "list"]) == 0
    assert main(["--registry", root, "promote", "v2", "--by", "ana", "--reason", "x"]) == 2
    out, err = capsys.readouterr()
    assert "| v1 | v0 | unevaluated |" in out and "**current**" in out
    assert "cannot be promoted" in err
    assert json.loads((registry.root / "promoted.json").read_text())["version"] == "v1"
