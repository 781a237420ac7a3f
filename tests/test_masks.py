"""Wire-format RLE (MaskRLE) and COCO RLE agree with pycocotools."""
import numpy as np
import pytest
from pycocotools import mask as coco_mask

from segmentation_node.masks import (
    bounding_box, box_xywh, coco_rle, greedy_match, label_image, mask_from_counts, mask_iou, rle_counts)


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


@pytest.mark.parametrize("mask", list(_cases()))
def test_box_is_the_one_pycocotools_gives(mask):
    """The one bounding box every COCO writer and message builder uses; zeros when empty."""
    expected = coco_mask.toBbox(coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))).tolist()
    assert list(box_xywh(mask)) == [int(v) for v in expected]


def test_label_image_gives_each_mask_its_value_and_leaves_the_rest_zero():
    first, second = np.zeros((4, 6), bool), np.zeros((4, 6), bool)
    first[0, :2], second[3, 4:] = True, True
    labels = label_image((4, 6), [first, second])
    assert labels.dtype == np.uint16
    assert np.array_equal(labels == 1, first) and np.array_equal(labels == 2, second)
    assert (labels[~(first | second)] == 0).all()


def test_greedy_match_on_boxes_equals_the_pairwise_full_frame_iou():
    """The box shortcut changes the cost, never the pairs: same matches as comparing every pair
    of full-frame masks, on random blobs that sometimes overlap and sometimes are empty."""
    rng = np.random.default_rng(3)
    for _ in range(30):
        def blobs(count):
            out = []
            for _ in range(count):
                mask = np.zeros((40, 50), bool)
                if rng.random() > 0.1:
                    top, left = rng.integers(0, 35), rng.integers(0, 45)
                    mask[top:top + rng.integers(1, 15), left:left + rng.integers(1, 15)] = True
                    mask &= rng.random(mask.shape) > 0.2
                out.append(mask)
            return out
        first, second = blobs(rng.integers(0, 6)), blobs(rng.integers(0, 6))
        brute = sorted(((mask_iou(a, b), i, j) for i, a in enumerate(first) for j, b in enumerate(second)
                        if mask_iou(a, b) >= 0.05), reverse=True)
        expected, used_i, used_j = [], set(), set()
        for iou, i, j in brute:
            if i not in used_i and j not in used_j:
                used_i.add(i)
                used_j.add(j)
                expected.append((i, j, iou))
        got = greedy_match(first, second, 0.05)
        assert [(i, j) for i, j, _ in got] == [(i, j) for i, j, _ in expected]
        assert np.allclose([iou for *_, iou in got], [iou for *_, iou in expected])
