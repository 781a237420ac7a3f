"""Release gate decisions on fixed scores (the full evaluation runs in the model-lifecycle test)."""
from __future__ import annotations

from dataclasses import replace

import pytest

from segmentation_node.release_gate import GateReport, GateThresholds, ModelScores, compare

DEPLOYED = ModelScores({"hand": 0.99, "tool": 0.97, "fixture": 0.98}, target_iou=0.9, boundary_f=0.8, mask_ap=0.7,
                       instability_per_100=2.0, prompt_iou={"defective items only": 0.8, "good blocks": 0.85},
                       target_precision={"defective items only": 1.0, "pick part_a": 0.97},
                       targets_marked={"defective items only": 20, "pick part_a": 150})
LIMITS = GateThresholds(recall_floor=0.95, recall_max_drop=0.01, stability_max_increase=1.0, prompt_max_drop=0.05,
                        quality_max_drop=0.03, precision_floor=0.95)


def verdict(candidate: ModelScores) -> GateReport:
    return GateReport("v2", "v1", "test", LIMITS, {"candidate": candidate, "deployed": DEPLOYED},
                      compare(candidate, DEPLOYED, LIMITS))


def test_an_equal_or_better_candidate_is_accepted():
    better = replace(DEPLOYED, target_iou=0.95, instability_per_100=1.0)
    report = verdict(better)
    assert report.verdict == "accepted" and not report.failures
    assert "**Verdict: ACCEPTED**" in report.to_markdown()


@pytest.mark.parametrize("change, failing_metric", [
    ({"forbidden_recall": {"hand": 0.97, "tool": 0.97, "fixture": 0.98}}, "forbidden recall: hand"),
    ({"forbidden_recall": {"tool": 0.97, "fixture": 0.98}}, "forbidden recall: hand"),  # class never found
    ({"instability_per_100": 3.5}, "id switches + flicker per 100 object-views"),
    ({"prompt_iou": {"defective items only": 0.70, "good blocks": 0.85}}, "promptability: 'defective items only'"),
    ({"target_precision": {"defective items only": 0.25, "pick part_a": 0.97}},
     "target precision: 'defective items only' (20 targets)"),
    ({"mask_ap": 0.6}, "mask ap"),
])
def test_each_regression_refuses_the_candidate_and_says_why(change, failing_metric):
    report = verdict(replace(DEPLOYED, **change))
    assert report.verdict == "rejected"
    assert [check.metric for check in report.failures][0].startswith(failing_metric)
    assert f"- {failing_metric}" in report.to_markdown()
    assert report.to_json()["verdict"] == "rejected"


def test_recall_and_precision_floors_hold_even_when_the_deployed_model_was_worse():
    weak = replace(DEPLOYED, forbidden_recall={"hand": 0.90, "tool": 0.97, "fixture": 0.98},
                   target_precision={"defective items only": 1.0, "pick part_a": 0.90})
    same = compare(weak, weak, LIMITS)
    assert [c.metric for c in same if not c.passed] == ["forbidden recall: hand", "target precision: 'pick part_a' (150 targets)"]
