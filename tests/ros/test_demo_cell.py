"""The README's main job, end to end over DDS, on a smaller scene: replay -> nodes -> planner.

The demo moves on only when the nodes' results say so (see demo_cell's docstring), so the story
below is the same on a loaded machine; its holds fail it with what they waited for."""
from dataclasses import replace

from segmentation_node.demo import EMBEDDED_DEFAULT
from segmentation_node.ros.demo_cell import run


def test_demo_over_dds_pauses_for_the_hand_and_resumes_after_approval(tmp_path):
    config = replace(EMBEDDED_DEFAULT, width=320, height=240, frames=30)
    assert run(tmp_path / "out", tmp_path / "cache", rate_factor=1.0, quiet=True, config=config) == 0
    summary = (tmp_path / "out/summary.md").read_text()
    story = summary.splitlines()

    def line_of(text: str) -> int:
        return next(i for i, line in enumerate(story) if text in line)

    resumed = line_of("operator resume: accepted")
    intent = line_of("operator intent 'defective items only': accepted")
    stopped = line_of("RUNNING -> AWAITING_APPROVAL by system: hand")  # alone or with the pick-zone intrusion
    approved = line_of("operator approve: accepted")
    assert resumed < intent < stopped < approved
    assert "planner" in summary and "PICK part_" in summary and "WAIT: " in summary
    # The planner's guard took the stop before any later result: no pick until the approval.
    assert not [line for line in story[stopped:approved] if "PICK" in line]
    assert (tmp_path / "out/overview.png").stat().st_size > 10_000
    assert list((tmp_path / "out").glob("overlay_*.png"))
