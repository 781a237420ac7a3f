"""The demo's pieces on a small scene: cached generation, key moments, picture and summary."""
import numpy as np

from segmentation_node.demo import cached_scene, key_frames, overview, scene_key, summary
from segmentation_node.synthetic.scene import ClipConfig, generate_clip

SMALL = ClipConfig(seed=2, views=2, width=128, height=96, frames=20, rate_hz=10.0, parts=5, picks=1)


def test_scene_is_generated_once_then_served_from_cache(tmp_path):
    first, from_cache = cached_scene(SMALL, tmp_path, progress=False)
    assert not from_cache and (first / "coco/annotations.json").exists() and (first / "bag").is_dir()
    stamp = (first / "coco/annotations.json").stat().st_mtime_ns
    again, from_cache = cached_scene(SMALL, tmp_path, progress=False)
    assert from_cache and again == first
    assert (again / "coco/annotations.json").stat().st_mtime_ns == stamp
    assert scene_key(SMALL) != scene_key(ClipConfig(**{**SMALL.__dict__, "seed": 3}))


def test_overview_shows_every_camera_at_each_key_moment(tmp_path):
    clip = generate_clip(SMALL)
    scene_dir, _ = cached_scene(SMALL, tmp_path, progress=False)
    moments = key_frames(clip)
    labels = [label for _, label in moments]
    assert labels[0] == "start" and "hand in the cell" in labels and "after a pick" in labels
    picture = overview(scene_dir / "coco/annotations.json", clip, moments)
    assert picture.shape == (96 * len(moments), 128 * 2, 3)
    # Forbidden regions are tinted red: the hand row has clearly more red-dominant pixels.
    red = [(row[..., 0].astype(int) - row[..., 1] > 80).sum() for row in np.split(picture, len(moments))]
    hand_row = labels.index("hand in the cell")
    assert red[hand_row] > red[0]
    text = summary(clip, scene_dir, False, tmp_path / "overview.png")
    assert "hand enters the cell" in text and "picked track" in text and "| target |" in text
