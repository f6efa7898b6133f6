"""SimOTAAssigner on hand-computed cases: four 8x8 priors in a row, stride 8, centres x = 4, 12, 20, 28."""

from __future__ import annotations

import pytest
import torch

from detkit.assigners import SimOTAAssigner

PRIORS = torch.tensor([[0, 0, 8, 8], [8, 0, 16, 8], [16, 0, 24, 8], [24, 0, 32, 8]], dtype=torch.float32)
STRIDES = torch.full((4,), 8.0)


def assign(pred_boxes, scores, *gts, assigner=None):
    boxes = torch.tensor([list(g) for g in gts], dtype=torch.float32).view(1, -1, 4)
    labels = torch.zeros(boxes.shape[:2], dtype=torch.long)
    return (assigner or SimOTAAssigner()).assign(
        PRIORS, boxes, labels, torch.ones(labels.shape, dtype=torch.bool), prior_strides=STRIDES,
        pred_boxes=torch.tensor(pred_boxes, dtype=torch.float32)[None],
        pred_scores=torch.tensor(scores, dtype=torch.float32).view(1, 4, 1))


GT = (0, 0, 16, 8)  # centre (8, 4): p0, p1 in box and centre; p2 in centre only (|20-8| < 20); p3 out


def test_dynamic_k_one_takes_lowest_cost():
    # Predictions p0, p1 each IoU 0.5 with the GT -> k = int(1.0) = 1; p1 scores higher -> lower cost.
    preds = [[0, 0, 8, 8], [8, 0, 16, 8], [16, 0, 24, 8], [24, 0, 32, 8]]
    res = assign(preds, [0.3, 0.8, 0.9, 0.9], GT)
    assert res.gt_index.tolist() == [[-1, 0, -1, -1]]
    assert res.iou[0, 1].item() == pytest.approx(0.5)  # the predicted box's IoU
    assert res.score_target.tolist() == [[0.0, pytest.approx(0.5), 0.0, 0.0]]  # YOLOX's IoU-aware target
    assert not res.ignore_mask.any()


def test_cost_tie_goes_to_lower_prior():
    preds = [[0, 0, 8, 8], [8, 0, 16, 8], [16, 0, 24, 8], [24, 0, 32, 8]]
    assert assign(preds, [0.5, 0.5, 0.5, 0.5], GT).gt_index.tolist() == [[0, -1, -1, -1]]


def test_dynamic_k_two():
    # p0 and p1 predict the GT exactly: IoUs 1, 1 -> k = 2.
    preds = [list(GT), list(GT), [16, 0, 24, 8], [24, 0, 32, 8]]
    assert assign(preds, [0.5, 0.5, 0.5, 0.5], GT).gt_index.tolist() == [[0, 0, -1, -1]]


def test_out_of_centre_candidate_only_when_needed():
    # p2 (in the centre region, outside the box) predicts the GT perfectly but pays 1e5: not taken.
    preds = [[0, 0, 4, 8], [8, 0, 12, 8], list(GT), [24, 0, 32, 8]]
    res = assign(preds, [0.5, 0.5, 0.99, 0.5], GT)
    assert res.gt_index[0, 2].item() == -1 and res.pos_mask[0, :2].sum().item() >= 1


def test_conflict_goes_to_min_cost_gt():
    # Two identical-geometry GTs; both take p0 (k = 1 each, p0's prediction is best for both).
    # GT1 (0,0,8,8) matches p0's prediction exactly (IoU 1) so its cost is lower: p0 -> GT1.
    preds = [[0, 0, 8, 8], [8, 0, 12, 8], [20, 0, 24, 8], [24, 0, 32, 8]]
    res = assign(preds, [0.5, 0.5, 0.5, 0.5], (0, 0, 9, 8), (0, 0, 8, 8))
    assert res.gt_index[0, 0].item() == 1


def test_far_gt_with_no_candidate_gets_nothing():
    preds = [[0, 0, 8, 8]] * 4
    res = assign(preds, [0.5] * 4, (200, 200, 210, 210))
    assert not res.pos_mask.any()


def test_needs_predictions_and_valid_labels():
    with pytest.raises(ValueError, match="pred_boxes"):
        SimOTAAssigner().assign(PRIORS, torch.tensor([[GT]], dtype=torch.float32),
                                torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1, dtype=torch.bool),
                                prior_strides=STRIDES)
    with pytest.raises(ValueError, match="labels"):
        SimOTAAssigner().assign(PRIORS, torch.tensor([[GT]], dtype=torch.float32),
                                torch.full((1, 1), 3), torch.ones(1, 1, dtype=torch.bool), prior_strides=STRIDES,
                                pred_boxes=PRIORS[None], pred_scores=torch.rand(1, 4, 2))


def test_classification_cost_is_yolox_bce_on_sqrt_scores():
    scores = torch.tensor([[[0.0, 0.25, 1.0], [0.64, 0.01, 0.5]]])  # (B=1, N=2, C=3), with 0 and 1
    neg, pos = SimOTAAssigner().score_logs(scores)
    neg_sum, neg_minus_pos = neg.sum(-1), neg - pos
    for n in range(2):
        for y in range(3):
            onehot = torch.nn.functional.one_hot(torch.tensor(y), 3).float()
            expect = torch.nn.functional.binary_cross_entropy(scores[0, n].sqrt(), onehot, reduction="none").sum()
            # sums of terms up to 100
            assert (neg_sum[0, n] - neg_minus_pos[0, n, y]).item() == pytest.approx(expect.item(), abs=1e-4)
