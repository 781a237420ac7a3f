"""Wire-format RLE (MaskRLE) and COCO RLE agree with pycocotools."""
import numpy as np
import pytest
from pycocotools import mask as coco_mask

from segmentation_node.masks import BoxedMask, bounding_box, coco_mask_fields, greedy_match, label_image, mask_from_counts


def rle_counts(mask):
    return BoxedMask.from_array(mask).rle_counts()


def full_frame_iou(a, b):
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


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
    fields = coco_mask_fields(BoxedMask.from_array(mask))
    rle = fields["segmentation"]
    assert rle["size"] == [height, width] and fields["area"] == np.count_nonzero(mask)
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
    assert list(BoxedMask.from_array(mask).xywh()) == [int(v) for v in expected]


def test_label_image_gives_each_mask_its_value_and_leaves_the_rest_zero():
    first, second = np.zeros((4, 6), bool), np.zeros((4, 6), bool)
    first[0, :2], second[3, 4:] = True, True
    labels = label_image((4, 6), [BoxedMask.from_array(first), BoxedMask.from_array(second)])
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
        brute = sorted(((full_frame_iou(a, b), i, j) for i, a in enumerate(first) for j, b in enumerate(second)
                        if full_frame_iou(a, b) >= 0.05), reverse=True)
        expected, used_i, used_j = [], set(), set()
        for iou, i, j in brute:
            if i not in used_i and j not in used_j:
                used_i.add(i)
                used_j.add(j)
                expected.append((i, j, iou))
        got = greedy_match([BoxedMask.from_array(m) for m in first], [BoxedMask.from_array(m) for m in second], 0.05)
        assert [(i, j) for i, j, _ in got] == [(i, j) for i, j, _ in expected]
        assert np.allclose([iou for *_, iou in got], [iou for *_, iou in expected])


def test_boxed_mask_operations_equal_their_full_frame_definitions():
    """Every BoxedMask operation against the same operation on full-frame arrays, on random
    blobs touching any border, overlapping or not, and empty."""
    rng = np.random.default_rng(11)
    shape = (23, 31)

    def blob():
        mask = np.zeros(shape, bool)
        if rng.random() > 0.15:
            top, left = rng.integers(-4, shape[0]), rng.integers(-4, shape[1])
            mask[max(top, 0):top + rng.integers(1, 14), max(left, 0):left + rng.integers(1, 14)] = True
            mask &= rng.random(shape) > 0.25
        return mask

    for _ in range(300):
        a, b, region = blob(), blob(), rng.random(shape) > 0.5
        boxed_a, boxed_b = BoxedMask.from_array(a), BoxedMask.from_array(b)
        assert np.array_equal(boxed_a.to_array(), a) and boxed_a.area == np.count_nonzero(a)
        assert boxed_a.iou(boxed_b) == pytest.approx(full_frame_iou(a, b))
        assert boxed_a.intersection(boxed_b) == np.count_nonzero(a & b)
        assert np.array_equal(boxed_a.without(region).to_array(), a & ~region)
        assert np.count_nonzero(boxed_a.within(region)) == np.count_nonzero(a & region)
        rows = sorted(rng.integers(0, shape[0] + 1, 2))
        columns = sorted(rng.integers(0, shape[1] + 1, 2))
        box = slice(*rows), slice(*columns)
        assert np.array_equal(boxed_a.crop_to(box), a[box])
        canvas = np.zeros(shape, np.uint16)
        boxed_a.paint(canvas, 7)
        assert np.array_equal(canvas == 7, a)
        if a.any():
            ys, xs = np.nonzero(a)
            assert boxed_a.centroid() == pytest.approx((xs.mean() + 0.5, ys.mean() + 0.5))
            assert BoxedMask(boxed_a.crop, boxed_a.top, boxed_a.left, shape).xywh() == boxed_a.xywh()


def test_a_crop_that_leaves_the_view_is_refused():
    with pytest.raises(ValueError, match="not inside"):
        BoxedMask(np.ones((3, 3), bool), 5, 0, (6, 6))


def test_masks_from_low_resolution_logits_equal_a_full_frame_resize():
    """SAM3's masks are upsampled once, only in their box: the same pixels as torch's bilinear
    resize of the whole logit map to the view (up and down, odd sizes), except where the
    resized logit is within float rounding of 0."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(2)
    for low, (height, width) in [((32, 32), (96, 128)), ((18, 24), (37, 53)), ((40, 30), (20, 29))]:
        for _ in range(20):
            logits = rng.normal(-2.0, 1.0, low).astype(np.float32)
            top, left = rng.integers(0, low[0] - 4), rng.integers(0, low[1] - 4)
            logits[top:top + rng.integers(1, 8), left:left + rng.integers(1, 8)] += rng.uniform(0, 5)
            resized = F.interpolate(torch.from_numpy(logits)[None, None], size=(height, width), mode="bilinear",
                                    align_corners=False)[0, 0].numpy()
            boxed = BoxedMask.from_logits(logits, height, width).to_array()
            differ = boxed != (resized > 0)
            assert (np.abs(resized[differ]) < 1e-5).all(), np.abs(resized[differ]).max()
        assert BoxedMask.from_logits(np.full(low, -1.0, np.float32), height, width).area == 0
