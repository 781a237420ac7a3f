"""The demo on a small scene: cached generation and commissioning, verdicts, picture, summary."""
from dataclasses import replace

from segmentation_node.demo import (
    EMBEDDED_DEFAULT, INTENT_CHANGE_FRAME, SECOND_INTENT, cached_classifier, cached_scene, key_frames, run_demo,
    scene_key, summary)
from segmentation_node.synthetic.scene import ClipConfig, generate_clip

SMALL = replace(EMBEDDED_DEFAULT, width=160, height=120, frames=20)


def test_scene_and_classifier_are_made_once_then_served_from_cache(tmp_path):
    first, from_cache = cached_scene(SMALL, tmp_path, progress=False)
    assert not from_cache and (first / "coco/annotations.json").exists() and (first / "bag").is_dir()
    stamp = (first / "coco/annotations.json").stat().st_mtime_ns
    again, from_cache = cached_scene(SMALL, tmp_path, progress=False)
    assert from_cache and again == first
    assert (again / "coco/annotations.json").stat().st_mtime_ns == stamp
    assert scene_key(SMALL) != scene_key(ClipConfig(**{**SMALL.__dict__, "seed": 3}))
    cached_classifier(SMALL, tmp_path)
    saved = list((tmp_path / "classical").glob("*.npz"))
    assert len(saved) == 1
    mtime = saved[0].stat().st_mtime_ns
    cached_classifier(SMALL, tmp_path)
    assert saved[0].stat().st_mtime_ns == mtime


def test_demo_shows_verdicts_intent_change_and_scores(tmp_path):
    result = run_demo(SMALL, tmp_path, progress=False)
    moments = key_frames(generate_clip(SMALL))
    assert result.picture.shape == (120 * len(moments), 160 * SMALL.views, 3)
    intents = [intent for _, _, intent in result.timeline]
    assert intents[INTENT_CHANGE_FRAME] == SECOND_INTENT and intents[0] != SECOND_INTENT
    hand_frames = [frame.index for frame, _, _ in result.timeline if any(o.label == "hand" for o in frame.objects)]
    verdicts = {frame.index: verdict for frame, verdict, _ in result.timeline}
    assert any(not verdicts[i].actionable for i in hand_frames)
    text = summary(result, tmp_path / "overview.png")
    assert "hand enters the cell" in text and "forbidden recall: hand" in text and SECOND_INTENT in text
    assert "not actionable: " in text
