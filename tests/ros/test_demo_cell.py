"""The README's main job, end to end over DDS, on a smaller scene: replay -> nodes -> planner."""
from dataclasses import replace

from segmentation_node.demo import EMBEDDED_DEFAULT
from segmentation_node.ros.demo_cell import run


def test_demo_over_dds_pauses_for_the_hand_and_resumes_after_approval(tmp_path):
    config = replace(EMBEDDED_DEFAULT, width=320, height=240, frames=30)
    assert run(tmp_path / "out", tmp_path / "cache", rate_factor=1.0, quiet=True, config=config) == 0
    summary = (tmp_path / "out/summary.md").read_text()
    assert "operator resume: accepted" in summary
    assert "operator intent 'defective items only': accepted" in summary
    assert "RUNNING -> AWAITING_APPROVAL by system: hand entered" in summary
    assert "operator approve: accepted" in summary
    assert "planner" in summary and "PICK part_" in summary and "WAIT: " in summary
    assert (tmp_path / "out/overview.png").stat().st_size > 10_000
    assert list((tmp_path / "out").glob("overlay_*.png"))
