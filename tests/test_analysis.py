import numpy as np
import torch

from detkit.analysis import AssignmentStats, gt_levels, positives_per_gt, size_bucket


def test_positives_per_gt_counts_and_ignores_non_positives():
    gt_index = torch.tensor([[0, 0, 1, -1, 2], [1, -1, -1, 1, 0]])
    pos = torch.tensor([[True, True, True, False, False], [True, False, False, True, False]])
    counts = positives_per_gt(gt_index, pos, num_gts=3)
    assert counts.tolist() == [[2, 1, 0], [0, 2, 0]]


def test_gt_levels_pick_the_level_of_the_best_prior():
    priors = torch.tensor([[0.0, 0, 8, 8], [8, 0, 16, 16], [0, 0, 32, 32], [0, 0, 64, 64]])
    gts = torch.tensor([[[0.0, 0, 9, 9], [0, 0, 30, 30], [0, 0, 70, 60]]])
    assert gt_levels(priors, gts, [2, 1, 1]).tolist() == [[0, 1, 2]]


def test_size_bucket_uses_coco_boundaries():
    areas = torch.tensor([0.0, 32.0**2 - 1, 32.0**2, 96.0**2 - 1, 96.0**2])
    assert size_bucket(areas).tolist() == [0, 0, 1, 1, 2]


def test_assignment_stats_summary_hand_computed():
    priors = torch.tensor([[0.0, 0, 8, 8], [8, 0, 16, 8], [0, 0, 64, 64]])
    gt_boxes = torch.tensor([[[0.0, 0, 16, 8], [0, 0, 100, 100], [5, 5, 5, 5]]])  # last: zero area
    gt_mask = torch.tensor([[True, True, True]])
    gt_index = torch.tensor([[0, 0, -1]])
    pos = gt_index >= 0
    iou = torch.tensor([[0.5, 0.5, 0.0]])
    stats = AssignmentStats(num_levels=2)
    stats.update(gt_index, pos, iou, gt_boxes, gt_mask, priors, [2, 1])
    s = stats.summary()
    assert s["num_gt"] == 2  # the zero-area GT does not count
    assert s["pos_per_gt_mean"] == 1.0 and s["pos_per_gt_min"] == 0 and s["gt_no_pos"] == 1
    assert s["gt_no_pos_pct"] == 50.0 and s["pos_iou_mean"] == 0.5
    assert s["gt_small"] == 1 and s["gt_large"] == 1 and s["gt_no_pos_large"] == 1
    assert s["pos_level0"] == 2 and s["pos_level1"] == 0 and s["pos_level0_pct"] == 100.0
    assert s["gt_no_pos_level1"] == 1 and s["gt_no_pos_level0"] == 0
    np.testing.assert_array_equal(stats.all_counts(), [2, 0])


def test_area_scale_moves_a_gt_between_size_buckets():
    priors = torch.tensor([[0.0, 0, 8, 8]])
    gt_boxes = torch.tensor([[[0.0, 0, 20, 20]]])  # 400 px² in the input, small
    stats = AssignmentStats(num_levels=1)
    stats.update(torch.tensor([[0]]), torch.tensor([[True]]), torch.tensor([[0.16]]), gt_boxes,
                 torch.tensor([[True]]), priors, [1], area_scale=torch.tensor([4.0]))  # 1600 px²
    assert stats.summary()["gt_medium"] == 1
