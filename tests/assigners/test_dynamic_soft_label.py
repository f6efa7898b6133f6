"""DynamicSoftLabelAssigner on hand-computed cases: four 8x8 priors in a row, stride 8, centres
x = 4, 12, 20, 28 (y = 4). Costs: ``BCE(p, IoU) * (IoU - p)**2 + 3 * -log(IoU + 1e-7) +
10 ** (distance / 8 - 3)``."""

from __future__ import annotations

import math

import pytest
import torch

from detkit.assigners import DynamicSoftLabelAssigner

PRIORS = torch.tensor([[0, 0, 8, 8], [8, 0, 16, 8], [16, 0, 24, 8], [24, 0, 32, 8]], dtype=torch.float32)
STRIDES = torch.full((4,), 8.0)
PREDS = [[0, 0, 8, 8], [8, 0, 16, 8], [16, 0, 24, 8], [24, 0, 32, 8]]  # each prior predicts itself
GT = (0, 0, 16, 8)  # holds the centres of p0 and p1; IoU 0.5 with their predictions


def assign(scores, *gts, preds=PREDS, labels=None, mask=None, **kwargs):
    boxes = torch.tensor([list(g) for g in gts], dtype=torch.float32).view(1, -1, 4)
    scores = torch.tensor(scores, dtype=torch.float32)
    scores = scores.view(1, 4, -1)
    labels = torch.zeros(boxes.shape[:2], dtype=torch.long) if labels is None else torch.tensor([labels])
    mask = torch.ones(labels.shape, dtype=torch.bool) if mask is None else torch.tensor([mask])
    return DynamicSoftLabelAssigner(**kwargs).assign(
        PRIORS, boxes, labels, mask, prior_strides=STRIDES,
        pred_boxes=torch.tensor(preds, dtype=torch.float32)[None], pred_scores=scores)


def bce(p: float, t: float) -> float:
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def test_soft_label_cost_prefers_the_score_nearest_the_iou():
    # k = int(0.5 + 0.5) = 1. Same IoU and distance for p0 and p1; the class cost is
    # BCE(0.3, 0.5) * 0.2**2 = 0.031 for p0 and BCE(0.8, 0.5) * 0.3**2 = 0.082 for p1: p0 wins
    # (SimOTA's cost would pick p1, the higher score).
    assert bce(0.3, 0.5) * 0.04 < bce(0.8, 0.5) * 0.09
    res = assign([0.3, 0.8, 0.9, 0.9], GT)
    assert res.gt_index.tolist() == [[0, -1, -1, -1]]
    assert res.score_target[0].tolist() == pytest.approx([0.5, 0, 0, 0])
    assert res.iou[0].tolist() == pytest.approx([0.5, 0, 0, 0])
    assert not res.ignore_mask.any()


def test_dynamic_k_two_and_cost_tie_to_lower_prior():
    preds = [list(GT), list(GT), PREDS[2], PREDS[3]]  # IoUs 1, 1 -> k = 2
    assert assign([0.5] * 4, GT, preds=preds).gt_index.tolist() == [[0, 0, -1, -1]]
    # Equal scores, IoUs and distances: an exact cost tie, settled by the lower prior index.
    assert assign([0.5] * 4, GT).gt_index.tolist() == [[0, -1, -1, -1]]


def test_conflict_goes_to_the_lowest_cost_gt_and_the_loser_gets_nothing():
    # A = GT holds p0, p1; B = (8, 0, 16, 8) holds p1, whose prediction is B itself (IoU 1).
    # A: k = 1, takes p1 (class cost 0 at p = IoU = 0.5; p0's is BCE(0.9, 0.5) * 0.16 = 0.19).
    # B: k = 1, takes p1. p1's cost: A 3 * ln 2 + 10**-2.5 = 2.08, B BCE(0.5, 1) * 0.25 + 10**-3
    # = 0.17: B wins and A is left without a positive.
    res = assign([0.9, 0.5, 0.5, 0.5], GT, (8, 0, 16, 8))
    assert res.gt_index.tolist() == [[-1, 1, -1, -1]]
    assert res.score_target[0, 1].item() == pytest.approx(1.0)


def test_every_class_counts_in_the_paper_cost_the_gt_class_alone_in_mmyolo():
    # Class 0 (the GT's) ties p0 and p1; class 1 scores 0.9 on p0 and 0.1 on p1. The background
    # term -log(1 - q) * q**2 is 1.87 for p0 and 0.001 for p1: the paper's cost takes p1, the
    # GT-class cost keeps the tie and takes p0.
    scores = [[0.5, 0.9], [0.5, 0.1], [0.5, 0.5], [0.5, 0.5]]
    assert assign(scores, GT).gt_index.tolist() == [[-1, 0, -1, -1]]
    assert assign(scores, GT, cls_cost="gt_class").gt_index.tolist() == [[0, -1, -1, -1]]


def test_gt_smaller_than_a_stride():
    tiny = (13, 2, 14, 3)  # holds no prior centre
    # Alone, no prior is a candidate: no positive.
    assert not assign([0.3, 0.8, 0.9, 0.9], tiny).pos_mask.any()
    # Beside GT, the tiny GT may take one of GT's candidates: p1 (its prediction (8, 0, 16, 8)
    # covers it, IoU 1/64, and it is 2.1 px away) costs 13.5 against p0's 48.4 (IoU 0).
    res = assign([0.3, 0.8, 0.9, 0.9], GT, tiny)
    assert res.gt_index.tolist() == [[0, 1, -1, -1]]
    assert res.score_target[0, 1].item() == pytest.approx(1 / 64)
    # mmyolo's batched form: a GT with no candidate still takes k = 1 prior, at cost 1e8.
    res = assign([0.3, 0.8, 0.9, 0.9], tiny, cls_cost="gt_class", candidates_only=False)
    assert res.num_pos == 1 and res.gt_index[res.pos_mask].tolist() == [0]


def test_gt_larger_than_the_image():
    # Every centre is inside; the predictions' IoUs with the 64x24 box are 64/1536 each -> k = 1;
    # p1 and p2 are nearest the centre (16, 4) (4 px each), p1 has the lower index.
    res = assign([0.5] * 4, (-16, -8, 48, 16))
    assert res.gt_index.tolist() == [[-1, 0, -1, -1]]
    assert res.score_target[0, 1].item() == pytest.approx(64 / 1536)


def test_no_gt_and_padded_rows():
    assert not assign([0.3, 0.8, 0.9, 0.9], GT, mask=[False]).pos_mask.any()
    res = assign([0.3, 0.8, 0.9, 0.9], (0, 0, 0, 0), GT, (1e4, 1e4, 2e4, 2e4), mask=[False, True, False])
    assert res.gt_index.tolist() == [[1, -1, -1, -1]]


@pytest.mark.parametrize("kwargs", [dict(topk=0), dict(cls_cost="focal")])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        DynamicSoftLabelAssigner(**kwargs)
