"""Wire-format RLE (MaskRLE) and COCO RLE agree with pycocotools."""
import numpy as np
import pytest
from pycocotools import mask as coco_mask

from segmentation_node.masks import bounding_box, coco_rle, mask_from_counts, rle_counts


def _cases():
    rng = np.random.default_rng(0)
    yield np.zeros((5, 7), bool)
    yield np.ones((5, 7), bool)
    first = np.zeros((4, 3), bool)
    first[0, 0] = True
    yield first
    last = np.zeros((4, 3), bool)
    last[-1, -1] = True
    yield last
    yield rng.random((31, 17)) < 0.3
    blob = np.zeros((60, 80), bool)
    blob[10:40, 20:55] = True
    yield blob


@pytest.mark.parametrize("mask", list(_cases()))
def test_counts_round_trip_and_match_pycocotools(mask):
    height, width = mask.shape
    counts = rle_counts(mask)
    assert sum(counts) == height * width
    assert np.array_equal(mask_from_counts(counts, height, width), mask)
    compressed = coco_mask.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    assert np.array_equal(coco_mask.decode(compressed).astype(bool), mask)
    rle = coco_rle(mask)
    assert rle["size"] == [height, width]
    decoded = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    assert np.array_equal(decoded.astype(bool), mask)


def test_counts_that_do_not_cover_the_image_are_rejected():
    with pytest.raises(ValueError, match="expected 4x4=16"):
        mask_from_counts([3, 4], 4, 4)


def test_cropped_rle_equals_the_whole_image_scan_on_masks_touching_any_border():
    def whole_image_counts(mask):  # the definition: runs of the column-major pixel sequence
        flat = mask.ravel(order="F")
        counts, value, run = [], False, 0
        for pixel in flat:
            if pixel == value:
                run += 1
            else:
                counts.append(run)
                value, run = pixel, 1
        return counts + [run]

    rng = np.random.default_rng(5)
    for case in range(400):
        height, width = (int(v) for v in rng.integers(1, 9, 2))
        mask = rng.random((height, width)) < rng.random()
        if case % 4 == 0:  # a small part away from the borders, the common case
            mask[:] = False
            mask[height // 3: height // 3 + 2, width // 2: width // 2 + 2] = True
        assert rle_counts(mask) == whole_image_counts(mask), mask.astype(int)
        box = bounding_box(mask)
        if mask.any():
            assert mask[box].sum() == mask.sum() and box[0].stop - box[0].start <= height
        else:
            assert box is None
