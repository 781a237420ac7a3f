"""Wire-format RLE (MaskRLE) and COCO RLE agree with pycocotools."""
import numpy as np
import pytest
from pycocotools import mask as coco_mask

from segmentation_node.masks import coco_rle, mask_from_counts, rle_counts


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
