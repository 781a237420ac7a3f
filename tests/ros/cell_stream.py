"""A commissioned synthetic cell and the camera side of the node tests: render once, publish
frame sets stamped now (optionally with a fault on one camera)."""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from segmentation_node.ros.messages import stamp_of
from segmentation_node.synthetic.classical_setup import commission, train_classifier
from segmentation_node.synthetic.render import render_frame_set
from segmentation_node.synthetic.scene import ClipConfig, generate_clip

CELL = ClipConfig(seed=7, views=3, width=320, height=240, frames=30, stacking=False)
CAMERAS = ["cam_top", "cam_left", "cam_right"]


def make_cell(folder: Path):
    """(renders per frame set, hand-in-view per frame set); writes folder/cell.npz."""
    clip = generate_clip(CELL)
    commission(clip, train_classifier(replace(CELL, frames=20), seeds=(101, 102))).save(folder / "cell.npz")
    renders = [render_frame_set(clip, index) for index in range(CELL.frames)]
    hand = [any(o.label == "hand" for o in frame.objects) for frame in clip.frames]
    return renders, hand


def image(render, stamp_ns, encoding="rgb8", width=None, stamp_offset_ns=0):
    array = render.image if width is None else render.image[:, :width]
    stamp_ns += stamp_offset_ns
    return Image(header=Header(stamp=stamp_of(stamp_ns), frame_id=render.camera.frame_id), height=array.shape[0],
                 width=array.shape[1], encoding=encoding, is_bigendian=0, step=array.shape[1] * 3,
                 data=np.ascontiguousarray(array).tobytes())


def send(publishers, renders, index, skip=(), sent=None, **bad):
    """Publish one frame set of the clip, stamped now; returns its stamp."""
    stamp_ns = time.time_ns()
    if sent is not None:
        sent.add(stamp_ns)
    for camera, render in zip(CAMERAS, renders[index]):
        if camera in skip:
            continue
        options = bad.get(camera, {})
        publishers[camera].publish(image(render, stamp_ns, **options))
    return stamp_ns
