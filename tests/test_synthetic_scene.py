"""The synthetic workcell: exact ground truth, stable and 3D-consistent ids, the events the
product needs to be tested against."""
import numpy as np
import pytest

from segmentation_node.contract import Role
from segmentation_node.masks import BoxedMask
from segmentation_node.synthetic.camera import PinholeCamera, camera_rig, look_at
from segmentation_node.synthetic.geometry import Box, yaw_rotation
from segmentation_node.synthetic.render import render_frame_set, render_view
from segmentation_node.synthetic.scene import (
    BLUE_PLASTIC, DEFECT_COLOR, TABLE, Clip, ClipConfig, DefectMark, FrameState, Lighting, SceneObject,
    Surface, generate_clip)

SMALL = ClipConfig(seed=3, views=3, width=320, height=240, frames=24, rate_hz=10.0)


@pytest.fixture(scope="module")
def clip():
    return generate_clip(SMALL)


@pytest.fixture(scope="module")
def renders(clip):
    return [render_frame_set(clip, index) for index in range(len(clip.frames))]


# --- hand-made scenes with known geometry ------------------------------------------------------
CAMERA_HEIGHT = 0.8


def _overhead_clip(objects, width=320, height=240) -> Clip:
    focal = 0.95 * width
    camera = PinholeCamera("cam_test", width, height, focal, focal, width / 2, height / 2,
                           look_at((0.0, 0.0, CAMERA_HEIGHT), (0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0)))
    lighting = Lighting(np.array([0.0, 0.0, 1.0]), 1.0, 0.3)
    frame = FrameState(0, 0, tuple(objects), lighting)
    return Clip(ClipConfig(seed=1), [camera], [frame])


def _block(track_id, x, y, z_top, half=(0.04, 0.03), thickness=0.02, defect=None):
    center = np.array([x, y, z_top - thickness / 2])
    box = Box(center, np.array([half[0], half[1], thickness / 2]), yaw_rotation(0.0))
    return SceneObject(track_id, "part_b", (Surface(box, BLUE_PLASTIC, defect),), center)


def test_mask_area_matches_the_projected_geometry():
    clip = _overhead_clip([_block(10, 0.0, 0.0, 0.05)])
    view = render_view(clip, clip.frames[0], 0, noise=False)
    camera = clip.cameras[0]
    expected = camera.fx * camera.fy * (0.08 * 0.06) / (CAMERA_HEIGHT - 0.05) ** 2
    (instance,) = view.instances
    assert instance.track_id == 10 and instance.visible_fraction == 1.0
    assert instance.area == pytest.approx(expected, rel=0.03)
    x, y, w, h = BoxedMask.from_array(view.mask(instance.track_id)).xywh()
    assert w == pytest.approx(camera.fx * 0.08 / (CAMERA_HEIGHT - 0.05), abs=2)
    assert h == pytest.approx(camera.fy * 0.06 / (CAMERA_HEIGHT - 0.05), abs=2)


def test_rendered_pixels_agree_with_the_mask():
    clip = _overhead_clip([_block(10, 0.02, -0.01, 0.05)])
    view = render_view(clip, clip.frames[0], 0, noise=False)
    mask = view.mask(10)
    image = view.image.astype(float)
    inside = image[mask].mean(axis=0)
    outside = image[~mask].mean(axis=0)
    # Blue plastic inside the mask, the wooden table outside it: the mask is where the part is.
    assert inside[2] > inside[0] + 60
    assert outside[0] > outside[2] + 20
    assert np.all(np.abs(outside / 255.0 - np.array(TABLE.color) * 1.3) < 0.2)


def test_occlusion_lowers_visible_fraction_of_the_hidden_object_only():
    below = _block(10, 0.0, 0.0, 0.03)
    above = _block(11, 0.05, 0.0, 0.06)
    clip = _overhead_clip([below, above])
    view = render_view(clip, clip.frames[0], 0, noise=False)
    by_id = {instance.track_id: instance for instance in view.instances}
    assert by_id[11].visible_fraction == 1.0
    assert 0.2 < by_id[10].visible_fraction < 0.9
    assert not (view.mask(10) & view.mask(11)).any()


def test_defect_is_visible_as_a_dark_scratch():
    clean = _overhead_clip([_block(10, 0.0, 0.0, 0.05)])
    scratched = _overhead_clip([_block(10, 0.0, 0.0, 0.05, defect=DefectMark(0.0, 0.02))])
    dark = []
    for clip in (clean, scratched):
        view = render_view(clip, clip.frames[0], 0, noise=False)
        pixels = view.image[view.mask(10)].astype(float)
        dark.append(int((pixels.max(axis=1) < 255 * max(DEFECT_COLOR) * 2).sum()))
    assert dark[0] == 0
    assert dark[1] > 20


# --- the generated clip ------------------------------------------------------------------------
def test_clip_has_what_the_cell_needs(clip, renders):
    labels = {obj.label for frame in clip.frames for obj in frame.objects}
    assert {"bin", "fixture", "tool", "hand", "part_a", "part_b"} <= labels
    parts = {obj.track_id: obj for frame in clip.frames for obj in frame.objects if obj.label.startswith("part")}
    assert any("defective" in obj.attributes for obj in parts.values())
    hand_frames = [any(obj.label == "hand" for obj in frame.objects) for frame in clip.frames]
    assert not hand_frames[0] and not hand_frames[-1] and any(hand_frames), "hand must enter and leave"
    picks = [event for frame in clip.frames for event in frame.events if event.startswith("picked")]
    assert len(picks) == SMALL.picks
    assert len({round(frame.lighting.intensity, 3) for frame in clip.frames}) > 5
    occluded_parts = [instance for views in renders for view in views for instance in view.instances
                      if instance.label.startswith("part") and instance.visible_fraction < 0.9]
    assert occluded_parts, "the clip must contain occlusion between objects"
    roles = {instance.label: instance.role for views in renders for view in views for instance in view.instances}
    assert roles["hand"] is Role.FORBIDDEN and roles["part_a"] is Role.TARGET and roles["bin"] is Role.IGNORE


def test_track_ids_are_stable_over_time(clip):
    label_of = {}
    previous_parts = None
    for frame in clip.frames:
        for obj in frame.objects:
            assert label_of.setdefault(obj.track_id, obj.label) == obj.label, "an id changed its object"
        parts = {obj.track_id for obj in frame.objects if obj.label.startswith("part")}
        if previous_parts is not None:
            assert parts <= previous_parts, "parts only leave (picked); no new ids appear"
            assert len(previous_parts - parts) == sum(e.startswith("picked") for e in frame.events)
        previous_parts = parts
    assert len({obj.track_id for obj in clip.frames[0].objects}) == len(clip.frames[0].objects)


def test_ids_are_consistent_across_views_by_projection(clip, renders):
    """Project each fully visible object's 3D centre into every view: the ground truth there
    must carry that object's id in every camera."""
    checked = 0
    for frame, views in zip(clip.frames, renders):
        for view in views:
            visible = {i.track_id: i.visible_fraction for i in view.instances}
            for obj in frame.objects:
                if visible.get(obj.track_id, 0.0) < 1.0:
                    continue
                ((u, v),), depth = view.camera.project(obj.center)
                assert depth[0] > 0
                if not (0 <= u < view.camera.width and 0 <= v < view.camera.height):
                    continue  # centre outside the picture (e.g. the arm at the image border)
                assert view.instance_map[int(v), int(u)] == obj.track_id, (obj.label, view.camera.name)
                checked += 1
    assert checked > 200


def test_same_object_keeps_its_label_in_every_view(renders):
    for views in renders:
        labels = [{i.track_id: i.label for i in view.instances} for view in views]
        common = set.intersection(*(set(view) for view in labels))
        assert len(common) >= 5
        for track_id in common:
            assert len({view[track_id] for view in labels}) == 1


def test_camera_rig_is_calibrated_consistently():
    cameras = camera_rig(4, 640, 480)
    assert [c.name for c in cameras] == ["cam_top", "cam_left", "cam_right", "cam_back"]
    for camera in cameras:
        rotation = camera.world_from_camera[:3, :3]
        assert np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-9)
        uv, depth = camera.project(np.array([0.0, 0.0, 0.03]))  # all look at the bin
        assert depth[0] > 0 and np.allclose(uv[0], [camera.cx, camera.cy], atol=1e-6)


def test_same_seed_same_scene_other_seed_other_scene():
    first = render_frame_set(generate_clip(SMALL), 5)
    again = render_frame_set(generate_clip(SMALL), 5)
    other = render_frame_set(generate_clip(ClipConfig(**{**SMALL.__dict__, "seed": 4})), 5)
    assert all(np.array_equal(a.instance_map, b.instance_map) and np.array_equal(a.image, b.image)
               for a, b in zip(first, again))
    assert not all(np.array_equal(a.instance_map, b.instance_map) for a, b in zip(first, other))


@pytest.mark.parametrize("bad, message", [
    (dict(views=1), "views must be 2..4"),
    (dict(views=5), "views must be 2..4"),
    (dict(width=32), "too small"),
    (dict(parts=3, picks=4), "picks"),
    (dict(frames=0), "frames"),
])
def test_bad_configuration_is_a_clear_error(bad, message):
    with pytest.raises(ValueError, match=message):
        ClipConfig(**bad)
