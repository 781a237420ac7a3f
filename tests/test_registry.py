"""Model registry: immutable versions, checksums, gate-only promotion bound to the gate's report,
rollback, and what concurrent jobs, dead registrations and edited files do to it. ROS-free; the
weights are opaque bytes here (loading real checkpoints is tested with the node)."""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import subprocess
import sys

import pytest

from segmentation_node.registry import ModelRegistry, RegistryError, main


def report(registry, version, verdict="accepted", **changes):
    """What the release gate records: for this version and these weights."""
    return {"candidate": version, "candidate_sha256": registry.entry(version).sha256, "deployed": "v1",
            "verdict": verdict, "scores": {}, **changes}


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
    registry.record_gate("v2", report(registry, "v2", "rejected"), {"release_report.md": b"# rejected"})
    with pytest.raises(RegistryError, match="'rejected'"):
        registry.promote("v2", "ana", "try anyway")
    registry.record_gate("v3", report(registry, "v3", forbidden_recall=0.99), {"release_report.md": b"# ok"})
    promoted = registry.promote("v3", "ana", "gate passed")
    assert registry.promoted().metrics["forbidden_recall"] == 0.99
    assert (registry.entry("v3").path / "release_report.md").read_bytes() == b"# ok"
    last = registry.history()[-1]
    assert last["report_sha256"] == promoted.report_sha256 == hashlib.sha256(
        (promoted.path / "release_report.json").read_bytes()).hexdigest()
    assert last["weights_sha256"] == promoted.sha256


def test_a_report_for_other_weights_or_another_version_is_refused(registry):
    with pytest.raises(RegistryError, match="the report is for 'v3'"):
        registry.record_gate("v2", report(registry, "v3"))
    with pytest.raises(RegistryError, match="not these"):
        registry.record_gate("v2", report(registry, "v2", candidate_sha256="0" * 64))
    with pytest.raises(RegistryError, match="verdict must be"):
        registry.record_gate("v2", report(registry, "v2", verdict="maybe"))


def test_rollback_and_tamper_detection(registry):
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback("ana", "x")
    registry.promote("v1", "ana", "bring-up", force_ungated=True)
    registry.record_gate("v2", report(registry, "v2"))
    registry.promote("v2", "ana", "better")
    assert registry.rollback("ben", "mis-picks on line 3").version == "v1"
    assert registry.promoted().version == "v1"
    assert [h["by"] for h in registry.history()] == ["ana", "ana", "ben"]
    registry.entry("v2").weights.write_bytes(b"tampered")
    with pytest.raises(RegistryError, match="does not match"):
        registry.promote("v2", "ana", "again")
    with pytest.raises(RegistryError, match="no model version 'nope'"):
        registry.entry("nope")


def _rewrite_manifest(registry, version, **changes):
    path = registry.entry(version).path / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_altered_weights_with_a_rewritten_manifest_are_never_promoted(registry, capsys):
    """The adversary's path: flip a byte of the weights, rewrite the manifest's sha256 and set
    its verdict to accepted. The gate never judged these weights: verify and promote refuse."""
    registry.promote("v1", "ana", "bring-up", force_ungated=True)
    weights = registry.entry("v2").weights
    data = bytearray(weights.read_bytes())
    data[10] ^= 0xFF
    weights.write_bytes(bytes(data))
    _rewrite_manifest(registry, "v2", sha256=hashlib.sha256(bytes(data)).hexdigest(), verdict="accepted")
    for command in (["verify", "v2"], ["promote", "v2", "--by", "eve", "--reason", "trust me"]):
        assert main(["--registry", str(registry.root), *command]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and "no release report" in error and "gate never ran" in error
    # A real report, for v2's original weights: still not these.
    registry2 = ModelRegistry(registry.root)
    (registry2.entry("v2").path / "release_report.json").write_text(json.dumps(
        {"candidate": "v2", "candidate_sha256": "f" * 64, "verdict": "accepted"}))
    _rewrite_manifest(registry, "v2", report_sha256=hashlib.sha256(
        (registry2.entry("v2").path / "release_report.json").read_bytes()).hexdigest())
    with pytest.raises(RegistryError, match="the release report judged weights ffffffffffff"):
        registry.promote("v2", "eve", "trust me")
    assert registry.promoted().version == "v1"


def test_a_report_edited_after_the_gate_fails_verify(registry):
    registry.record_gate("v2", report(registry, "v2", "rejected"))
    path = registry.entry("v2").path / "release_report.json"
    path.write_text(path.read_text().replace('"rejected"', '"accepted"'))
    _rewrite_manifest(registry, "v2", verdict="accepted")
    with pytest.raises(RegistryError, match="is not the report the gate recorded"):
        registry.verify("v2")


@pytest.mark.parametrize("damage, what", [
    (lambda r: (r.entry("v2").path / "manifest.json").write_text("{not json"), "v2/manifest.json is not a readable"),
    (lambda r: (r.entry("v2").path / "manifest.json").write_text("[1, 2]"), "a JSON object expected"),
    (lambda r: _rewrite_manifest(r, "v2", created_ns="yesterday"), "is not a model manifest"),
])
def test_a_malformed_manifest_is_one_line_and_the_rest_still_lists(registry, capsys, damage, what):
    damage(registry)
    root = str(registry.root)
    assert main(["--registry", root, "verify", "v2"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and what in error and "Traceback" not in error
    assert main(["--registry", root, "list"]) == 0
    out, error = capsys.readouterr()
    assert "| v1 |" in out and "| v3 |" in out and "| v2 |" not in out
    assert f"unreadable: " in error and what in error


@pytest.mark.parametrize("content, what", [("{", "promoted.json is not a readable promotion history"),
                                           ('{"history": 3}', "is not a promotion history")])
def test_a_malformed_promotion_history_is_one_line(registry, capsys, content, what):
    (registry.root / "promoted.json").write_text(content)
    for command in (["list"], ["promote", "v1", "--by", "ana", "--reason", "x", "--force-ungated"]):
        assert main(["--registry", str(registry.root), *command]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and what in error


def test_a_dead_registration_is_cleaned_and_named_and_never_listed(registry, tmp_path, capsys):
    """What a registration killed between copying and renaming leaves behind."""
    leftover = registry.root / "models" / ".staging-v5-4242"
    leftover.mkdir()
    (leftover / "manifest.json").write_text(json.dumps({"version": "v5"}))
    assert [e.version for e in registry.entries()] == ["v1", "v2", "v3"]
    with pytest.raises(RegistryError, match=r"no model version 'v5' .*\(registered: v1, v2, v3\)"):
        registry.verify("v5")  # used to recurse: the error listed entries, which read the leftover
    (tmp_path / "v5.pt").write_bytes(b"five")
    assert main(["--registry", str(registry.root), "register", str(tmp_path / "v5.pt"), "--version", "v5"]) == 0
    assert "removed .staging-v5-4242, left by a registration that did not finish" in capsys.readouterr().err
    assert not leftover.exists()


def _register(root: str, weights: str, version: str, queue) -> None:
    code = subprocess.run([sys.executable, "-m", "segmentation_node.registry", "--registry", root, "register",
                           weights, "--version", version], capture_output=True, text=True)
    queue.put((code.returncode, code.stderr))


def test_concurrent_registrations_of_one_version_leave_one_and_a_clear_error(tmp_path):
    root = tmp_path / "registry"
    weights = tmp_path / "big.pt"
    weights.write_bytes(b"w" * (8 << 20))  # long enough to copy that both are inside register
    queue = multiprocessing.get_context("spawn").Queue()
    jobs = [multiprocessing.get_context("spawn").Process(target=_register, args=(str(root), str(weights), "v5", queue))
            for _ in range(2)]
    for job in jobs:
        job.start()
    outcomes = sorted(queue.get(timeout=120) for _ in jobs)
    for job in jobs:
        job.join()
    assert [code for code, _ in outcomes] == [0, 2]
    assert outcomes[1][1] == "workcell_registry: version v5 is already registered; versions are immutable\n"
    registry = ModelRegistry(root)
    assert [e.version for e in registry.entries()] == ["v5"] and registry.verify("v5")
    assert not list((root / "models").glob(".staging-*"))


def _promote_many(root: str, version: str, by: str, count: int, start) -> None:
    registry = ModelRegistry(root)
    start.wait()  # both processes promote at the same time
    for _ in range(count):
        registry.promote(version, by, "load test")


def test_concurrent_promotions_lose_no_history(registry):
    for version in ("v2", "v3"):
        registry.record_gate(version, report(registry, version))
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    jobs = [context.Process(target=_promote_many, args=(str(registry.root), version, by, 40, start))
            for version, by in (("v2", "ana"), ("v3", "ben"))]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=120)
    assert [job.exitcode for job in jobs] == [0, 0]
    history = registry.history()
    assert len(history) == 80, "a read-modify-write without the lock loses promotions"
    assert sorted(h["by"] for h in history) == ["ana"] * 40 + ["ben"] * 40


def test_cli(registry, capsys):
    root = str(registry.root)
    assert main(["--registry", root, "promote", "v1", "--by", "ana", "--reason", "x", "--force-ungated"]) == 0
    assert main(["--registry", root, "list"]) == 0
    assert main(["--registry", root, "promote", "v2", "--by", "ana", "--reason", "x"]) == 2
    out, err = capsys.readouterr()
    assert "| v1 | v0 | unevaluated |" in out and "**current**" in out
    assert "cannot be promoted" in err
    assert json.loads((registry.root / "promoted.json").read_text())["version"] == "v1"
