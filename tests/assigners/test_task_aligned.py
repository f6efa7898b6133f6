"""TaskAlignedAssigner on hand-computed cases: four 8x8 priors in a row (centres x = 4, 12, 20, 28), given as
bare boxes (the all-pairs table) and as the PriorGrid that holds them (each GT's window): same results."""

from __future__ import annotations

import pytest
import torch

from detkit.anchors import PointGenerator
from detkit.assigners import TaskAlignedAssigner

PRIORS = torch.tensor([[0, 0, 8, 8], [8, 0, 16, 8], [16, 0, 24, 8], [24, 0, 32, 8]], dtype=torch.float32)
GRID = PointGenerator(strides=[8], scale=1.0).grid_priors([(1, 4)])
FORMS = {"boxes": PRIORS, "grid": GRID}
_form = ["boxes"]


@pytest.fixture(autouse=True, params=sorted(FORMS))
def prior_form(request):
    """Every case runs on the bare boxes and on the grid."""
    _form[0] = request.param
    yield request.param
    _form[0] = "boxes"


def test_the_grid_holds_the_same_boxes():
    assert torch.equal(GRID.boxes, PRIORS)


def assign(assigner, preds, scores, *gts):
    boxes = torch.tensor([list(g) for g in gts], dtype=torch.float32).view(1, -1, 4)
    labels = torch.zeros(boxes.shape[:2], dtype=torch.long)
    return assigner.assign(FORMS[_form[0]], boxes, labels, torch.ones(labels.shape, dtype=torch.bool),
                           pred_boxes=torch.tensor(preds, dtype=torch.float32)[None],
                           pred_scores=torch.tensor(scores, dtype=torch.float32).view(1, 4, 1))


GT = (0, 0, 24, 8)  # holds the centres of p0, p1, p2
PREDS = [[0, 0, 24, 8], [0, 0, 12, 8], [12, 0, 24, 8], [24, 0, 32, 8]]  # IoUs 1, 0.5, 0.5, 0


def test_topk_by_metric_and_normalised_target():
    # metrics (alpha 1, beta 2): 0.2*1 = 0.2, 0.9*0.25 = 0.225, 0.4*0.25 = 0.1 -> top 2: p1, p0.
    res = assign(TaskAlignedAssigner(topk=2, beta=2.0), PREDS, [0.2, 0.9, 0.4, 0.9], GT)
    assert res.gt_index.tolist() == [[0, 0, -1, -1]]
    assert res.align_metric[0].tolist() == pytest.approx([0.2, 0.225, 0, 0])
    # target = metric / max metric (0.225) * max IoU (1.0)
    assert res.score_target[0].tolist() == pytest.approx([0.2 / 0.225, 1.0, 0, 0])
    assert res.iou[0].tolist() == pytest.approx([1.0, 0.5, 0, 0])


def test_centre_outside_gt_is_never_a_candidate():
    res = assign(TaskAlignedAssigner(topk=4), PREDS, [0.9, 0.9, 0.9, 0.9], GT)
    assert res.gt_index.tolist() == [[0, 0, 0, -1]]  # p3's centre (28, 4) lies outside


def test_zero_metric_is_not_positive():
    res = assign(TaskAlignedAssigner(topk=4), PREDS, [0.9, 0.0, 0.9, 0.9], GT)
    assert res.gt_index.tolist() == [[0, -1, 0, -1]]


def test_two_gts_resolved_by_iou():
    # GT1 (0,0,14,8) holds p0, p1. Both GTs keep p0 and p1 (GT0: p1 wins the metric tie with p2).
    # p0's prediction: IoU 1 with GT0, 7/12 with GT1 -> GT0; p1's: 0.5 with GT0, 6/7 with GT1 -> GT1.
    res = assign(TaskAlignedAssigner(topk=2), PREDS, [0.9] * 4, GT, (0, 0, 14, 8))
    assert res.gt_index.tolist() == [[0, 1, -1, -1]]
    assert res.iou[0, 1].item() == pytest.approx(6 / 7)


def test_metric_tie_goes_to_lower_prior():
    preds = [list(GT)] * 4
    res = assign(TaskAlignedAssigner(topk=1), preds, [0.5] * 4, GT)
    assert res.gt_index.tolist() == [[0, -1, -1, -1]]


@pytest.mark.parametrize("kwargs", [dict(topk=0), dict(iou_mode="giou"), dict(resolve="any")])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        TaskAlignedAssigner(**kwargs)


def test_resolve_in_gts_like_yolov8():
    # p1's prediction (8,0,16,8). GT_A (0,0,16,8) and GT_B (10,0,20,8) both keep p1 as their top-1
    # (IoU 0.5 each). GT_C (8,0,21,8) holds p1's centre too (IoU 64/104 = 0.615) but keeps p2,
    # whose prediction is GT_C itself. TOOD: p1 -> A (tie with B, lower index). YOLOv8: p1 has two
    # positive GTs, so it goes to the highest IoU among all GTs holding its centre: C.
    preds = [[0, 0, 4, 8], [8, 0, 16, 8], [8, 0, 21, 8], [24, 0, 32, 8]]
    scores = [0.01, 0.9, 0.9, 0.9]
    gts = [(0, 0, 16, 8), (10, 0, 20, 8), (8, 0, 21, 8)]
    tood = assign(TaskAlignedAssigner(topk=1, beta=1.0), preds, scores, *gts)
    v8 = assign(TaskAlignedAssigner(topk=1, beta=1.0, resolve="in_gts"), preds, scores, *gts)
    assert tood.gt_index.tolist() == [[-1, 0, 2, -1]]
    assert v8.gt_index.tolist() == [[-1, 2, 2, -1]]
    assert v8.iou[0, 1].item() == pytest.approx(64 / 104)


def test_gt_smaller_than_a_stride_enlarged_for_the_candidate_test():
    # The 2x2 GT (13, 3, 15, 5) holds no prior centre. With center_min_side=16 the tested box is
    # (6, -4, 22, 12): p1 and p2 become candidates; the IoU still uses the 2x2 box (p1's prediction
    # (12, 2, 16, 6) covers it: 4/16; p2's misses it: 0).
    tiny = (13, 3, 15, 5)
    preds = [[0, 0, 8, 8], [12, 2, 16, 6], [16, 0, 24, 8], [24, 0, 32, 8]]
    scores = [0.9] * 4
    assert not assign(TaskAlignedAssigner(topk=2), preds, scores, tiny).pos_mask.any()
    res = assign(TaskAlignedAssigner(topk=2, center_min_side=16.0), preds, scores, tiny)
    assert res.gt_index.tolist() == [[-1, 0, -1, -1]]  # p2's metric is 0: not positive (TOOD)
    assert res.iou[0, 1].item() == pytest.approx(0.25)
    # topk=4 keeps every prior (with topk=2, which zero-metric prior joins p1 is torch.topk's choice).
    res = assign(TaskAlignedAssigner(topk=4, center_min_side=16.0, keep_zero_metric=True), preds, scores, tiny)
    assert res.gt_index.tolist() == [[-1, 0, 0, -1]]  # kept at metric 0 (Ultralytics 8.4)
    # metric / (max metric + 1e-9) * max IoU, the metric 0.9 * 0.25**6 = 2.2e-4
    assert res.score_target[0].tolist() == pytest.approx([0, 0.25, 0, 0], rel=1e-5)


def test_resolve_all_gts_sends_an_all_zero_prior_to_the_first_valid_gt():
    # GT_A (24, 0, 32, 8) holds p3; GT_B (0, 0, 16, 8) p0, p1; GT_C (8, 0, 24, 8) p1, p2. Every
    # prediction is far away (IoU 0, metric 0); with keep_zero_metric each GT keeps its candidates,
    # so p1 is positive for B and C with IoU 0 for every GT: "in_gts" gives it to the first GT
    # holding its centre (B), "all_gts" to the first valid GT (A, as Ultralytics' argmax over its
    # zero overlaps does), skipping a leading padding row.
    preds = [[100, 100, 101, 101]] * 4
    gts = [(24, 0, 32, 8), (0, 0, 16, 8), (8, 0, 24, 8)]
    in_gts = TaskAlignedAssigner(topk=4, keep_zero_metric=True, resolve="in_gts")
    all_gts = TaskAlignedAssigner(topk=4, keep_zero_metric=True, resolve="all_gts")
    assert assign(in_gts, preds, [0.5] * 4, *gts).gt_index.tolist() == [[1, 1, 2, 0]]
    assert assign(all_gts, preds, [0.5] * 4, *gts).gt_index.tolist() == [[1, 0, 2, 0]]
    boxes = torch.tensor([[(0, 0, 0, 0), *gts]], dtype=torch.float32)
    mask = torch.tensor([[False, True, True, True]])
    res = all_gts.assign(PRIORS, boxes, torch.zeros(1, 4, dtype=torch.long), mask,
                         pred_boxes=torch.tensor(preds, dtype=torch.float32)[None],
                         pred_scores=torch.full((1, 4, 1), 0.5))
    assert res.gt_index.tolist() == [[2, 1, 3, 1]]
    assert res.score_target[0].tolist() == [0, 0, 0, 0]


def test_bad_center_min_side():
    with pytest.raises(ValueError, match="center_min_side"):
        TaskAlignedAssigner(center_min_side=0.0)
