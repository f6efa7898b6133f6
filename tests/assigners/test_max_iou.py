"""MaxIoUAssigner on hand-computed cases."""

from __future__ import annotations

import pytest
import torch

from detkit.assigners import MaxIoUAssigner

# Four 10x10 priors: p0 at the origin, p1 right of it, p2 below it, p3 away.
PRIORS = torch.tensor([[0, 0, 10, 10], [10, 0, 20, 10], [0, 10, 10, 20], [20, 20, 30, 30]], dtype=torch.float32)


def assign(assigner, *gts):
    boxes = torch.tensor([list(g) for g in gts], dtype=torch.float32).view(1, -1, 4)
    labels = torch.arange(boxes.shape[1]).view(1, -1) + 5
    return assigner.assign(PRIORS, boxes, labels, torch.ones(labels.shape, dtype=torch.bool))


def test_thresholds_positive_ignored_negative():
    # GT (0,0,10,14): IoU p0 = 100/140 = 0.714 (pos), p2 = 40/200 = 0.2 (neg), p1 = p3 = 0.
    res = assign(MaxIoUAssigner(0.5, 0.3), (0, 0, 10, 14))
    assert res.gt_index.tolist() == [[0, -1, -1, -1]]
    assert res.labels.tolist() == [[5, -1, -1, -1]]
    assert res.ignore_mask.tolist() == [[False] * 4]
    assert res.iou[0, 0].item() == pytest.approx(100 / 140)


def test_between_thresholds_is_ignored():
    # GT (5,0,15,10): IoU 50/150 = 1/3 with p0 and p1, in [0.3, 0.5) -> ignored.
    res = assign(MaxIoUAssigner(0.5, 0.3, match_low_quality=False), (5, 0, 15, 10))
    assert res.gt_index.tolist() == [[-1, -1, -1, -1]]
    assert res.ignore_mask.tolist() == [[True, True, False, False]]


def test_low_quality_takes_every_prior_reaching_the_best_iou():
    res = assign(MaxIoUAssigner(0.5, 0.3), (5, 0, 15, 10))
    assert res.gt_index.tolist() == [[0, 0, -1, -1]]
    assert res.iou[0, :2].tolist() == pytest.approx([1 / 3, 1 / 3])
    assert res.ignore_mask.tolist() == [[False] * 4]


def test_min_pos_iou_blocks_low_quality():
    res = assign(MaxIoUAssigner(0.5, 0.3, min_pos_iou=0.4), (5, 0, 15, 10))
    assert res.gt_index.tolist() == [[-1, -1, -1, -1]]
    assert res.ignore_mask.tolist() == [[True, True, False, False]]


def test_tie_per_prior_goes_to_lowest_gt_low_quality_to_latest():
    gts = [(0, 0, 10, 10), (0, 0, 10, 10)]  # identical GTs: IoU 1 with p0 for both
    assert assign(MaxIoUAssigner(0.5, 0.4, match_low_quality=False), *gts).gt_index.tolist() == [[0, -1, -1, -1]]
    assert assign(MaxIoUAssigner(0.5, 0.4), *gts).gt_index.tolist() == [[1, -1, -1, -1]]


def test_low_quality_overrides_a_better_positive():
    # GT0 = p0 exactly (IoU 1). GT1 (0,0,10,25) overlaps p0 (0.4) and p2 (0.4): both its best,
    # so the later GT1 takes p0 from GT0 (mmdet's documented behaviour) and p2.
    res = assign(MaxIoUAssigner(0.5, 0.3), (0, 0, 10, 10), (0, 0, 10, 25))
    assert res.gt_index.tolist() == [[1, -1, 1, -1]]
    assert res.iou[0, 0].item() == pytest.approx(0.4)


def test_gt_without_overlap_gets_nothing():
    res = assign(MaxIoUAssigner(0.5, 0.3), (100, 100, 120, 120))
    assert res.gt_index.tolist() == [[-1, -1, -1, -1]] and not res.ignore_mask.any()


def test_gt_larger_than_the_image_takes_all_equal_best_priors():
    # Every prior lies inside the GT with the same area: equal IoU 100/160000, all low-quality matches.
    res = assign(MaxIoUAssigner(0.5, 0.3), (-100, -100, 300, 300))
    assert res.gt_index.tolist() == [[0, 0, 0, 0]]


def test_zero_area_gt_is_never_assigned():
    res = assign(MaxIoUAssigner(0.5, 0.3), (0, 0, 0, 10))
    assert res.gt_index.tolist() == [[-1, -1, -1, -1]] and not res.ignore_mask.any()


@pytest.mark.parametrize("pos, neg", [(0.3, 0.5), (0.5, -0.1)])
def test_bad_thresholds_raise(pos, neg):
    with pytest.raises(ValueError, match="neg_iou_thr"):
        MaxIoUAssigner(pos, neg)
