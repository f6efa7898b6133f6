"""ATSSAssigner on hand-computed cases."""

from __future__ import annotations

import pytest
import torch

from detkit.assigners import ATSSAssigner
from detkit.assigners.atss import nearest_candidates
from detkit.assigners.base import prepare_priors

ROW = torch.tensor([[0, 0, 10, 10], [10, 0, 20, 10], [20, 0, 30, 10], [30, 0, 40, 10]], dtype=torch.float32)
# Three "anchors" sharing the centre (10, 10): 10x10, 20x20, 40x40.
NESTED = torch.tensor([[5, 5, 15, 15], [0, 0, 20, 20], [-10, -10, 30, 30]], dtype=torch.float32)


def assign(assigner, priors, counts, *gts):
    boxes = torch.tensor([list(g) for g in gts], dtype=torch.float32).view(1, -1, 4)
    labels = torch.zeros(boxes.shape[:2], dtype=torch.long)
    return assigner.assign(priors, boxes, labels, torch.ones(labels.shape, dtype=torch.bool),
                           num_level_priors=counts)


def test_adaptive_threshold_hand_case():
    # GT (2,0,12,10), centre (7,5): 3 nearest centres p0, p1, p2 with IoU 2/3, 1/9, 0.
    # mean 0.2593, std (N-1) 0.3572 -> threshold 0.6165: only p0 (centre (5,5) inside the GT).
    res = assign(ATSSAssigner(topk=3), ROW, [4], (2, 0, 12, 10))
    assert res.gt_index.tolist() == [[0, -1, -1, -1]]
    assert res.iou[0, 0].item() == pytest.approx(2 / 3)
    assert not res.ignore_mask.any()


def test_population_std_would_differ():
    # With topk=2 the candidates p0, p1 (IoU 2/3, 1/9): Bessel std 0.3928 -> thr 0.782 > 2/3: none.
    # (A population std, 0.2778, would give 0.667 and make p0 positive.)
    res = assign(ATSSAssigner(topk=2), ROW, [4], (2, 0, 12, 10))
    assert res.gt_index.tolist() == [[-1, -1, -1, -1]]


def test_prior_of_two_gts_goes_to_higher_iou():
    # GT0 (0,0,20,20): IoUs 0.25, 1, 0.25 -> thr 0.933 -> prior 1 (IoU 1).
    # GT1 (1,1,19,19): IoUs 0.309, 0.81, 0.2025 -> thr 0.765 -> prior 1 (IoU 0.81). GT0 wins.
    res = assign(ATSSAssigner(topk=3), NESTED, [3], (1, 1, 19, 19), (0, 0, 20, 20))
    assert res.gt_index.tolist() == [[-1, 1, -1]]
    swapped = assign(ATSSAssigner(topk=3), NESTED, [3], (0, 0, 20, 20), (1, 1, 19, 19))
    assert swapped.gt_index.tolist() == [[-1, 0, -1]]


def test_topk_larger_than_level_and_single_candidate():
    # One prior, topk 9: the only candidate; its std is taken as 0, threshold = its IoU.
    one = torch.tensor([[0, 0, 10, 10]], dtype=torch.float32)
    assert assign(ATSSAssigner(topk=9), one, [1], (4.98, 0, 10, 10)).gt_index.tolist() == [[0]]


def test_centre_margin_is_strict_0_01():
    one = torch.tensor([[0, 0, 10, 10]], dtype=torch.float32)
    # centre x = 5, GT left side 4.995: margin 0.005 <= 0.01 -> not inside.
    assert assign(ATSSAssigner(topk=9), one, [1], (4.995, 0, 10, 10)).gt_index.tolist() == [[-1]]


def test_two_levels_each_give_topk():
    priors = prepare_priors(torch.cat([ROW, NESTED]), [4, 3])
    cand = nearest_candidates(priors, torch.tensor([[7.0, 5.0]]), 2)
    assert cand.tolist() == [[0, 1, 4, 5]]  # level 1: all three tie at (10, 10) -> lowest indices


def test_distance_tie_goes_to_lower_prior_index():
    # GT centre (20, 5): p1, p2 at distance 5, p0, p3 at 15.
    priors = prepare_priors(ROW, [4])
    gt_centre = torch.tensor([[20.0, 5.0]])
    assert nearest_candidates(priors, gt_centre, 1).tolist() == [[1]]
    assert nearest_candidates(priors, gt_centre, 3).tolist() == [[0, 1, 2]]


def test_gt_larger_than_image():
    # IoUs 100/1.21e6, 400/1.21e6, 1600/1.21e6 -> threshold below the largest: the 40x40 prior.
    res = assign(ATSSAssigner(topk=3), NESTED, [3], (-100, -100, 1000, 1000))
    assert res.gt_index.tolist() == [[-1, -1, 0]]


def test_needs_level_counts():
    with pytest.raises(ValueError, match="num_level_priors"):
        ATSSAssigner().assign(ROW, torch.zeros(1, 1, 4), torch.zeros(1, 1, dtype=torch.long),
                              torch.ones(1, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="summing"):
        assign(ATSSAssigner(), ROW, [3], (0, 0, 5, 5))


def test_bad_topk():
    with pytest.raises(ValueError, match="topk"):
        ATSSAssigner(topk=0)
