"""The model lifecycle end to end on CPU (issue #7's must-show): synthetic run -> flywheel
shards -> audit -> stage 1 + stage 2 -> release gate (planted regression refused, candidate
accepted) -> promotion -> the running node swaps to the promoted model and rolls back."""
import json
import subprocess
import sys

from segmentation_node.registry import ModelRegistry


def test_flywheel_to_hot_swap(tmp_path):
    work = tmp_path / "cycle"
    run = subprocess.run([sys.executable, "-m", "segmentation_node.flywheel.cycle", "--work", str(work)],
                         capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((work / "summary.json").read_text())
    assert summary["shards"] and set(summary["shards"].values()) == {"accepted"}
    planted = summary["gate v2-planted"]
    assert planted["verdict"] == "rejected" and "forbidden recall: hand" in planted["failures"]
    assert summary["gate v2"]["verdict"] == "accepted"
    registry = ModelRegistry(work / "registry")
    assert registry.promoted().version == summary["promoted"] == "v2"
    assert registry.entry("v2-planted").verdict == "rejected"
    assert "Refused because" in (registry.entry("v2-planted").path / "release_report.md").read_text()
    node = summary["node"]
    assert (node["served_before"], node["served_after_swap"], node["served_after_rollback"]) == ("v1", "v2", "v1")
    assert node["swap"][0] and node["rollback"][0] and node["node_alive"]
    assert node["gate_states"] == ["RUNNING"] * 3
