"""TaskAlignedAssigner's second filter (``topk2``, Ultralytics 8.4's ``select_highest_overlaps``; YOLO26's
one-to-one rule ``tal-e2e-ultralytics``) on hand-computed cases: four 8x8 priors in a row (centres x = 4, 12,
20, 28), as bare boxes (the all-pairs table) and as the PriorGrid holding them (each GT's window)."""

from __future__ import annotations

import pytest
import torch

from detkit.anchors import PointGenerator
from detkit.assigners import TaskAlignedAssigner
from detkit.assigners.presets import ASSIGNER_PRESETS, build_preset
from detkit.testing import check_assigner
from tests.assigners.test_sparse_forms import assert_same, both_forms, random_case

PRIORS = torch.tensor([[0, 0, 8, 8], [8, 0, 16, 8], [16, 0, 24, 8], [24, 0, 32, 8]], dtype=torch.float32)
GRID = PointGenerator(strides=[8], scale=1.0).grid_priors([(1, 4)])
FORMS = {"boxes": PRIORS, "grid": GRID}

GT = (0.0, 0.0, 24.0, 8.0)  # holds the centres of p0, p1, p2
PREDS = [[0, 0, 24, 8], [0, 0, 12, 8], [12, 0, 24, 8], [24, 0, 32, 8]]  # IoUs with GT: 1, 0.5, 0.5, 0
SCORES = [0.2, 0.9, 0.4, 0.9]  # metrics (alpha 1, beta 2): 0.2, 0.225, 0.1 (p3: no candidate)


@pytest.fixture(params=sorted(FORMS))
def priors(request):
    return FORMS[request.param]


def assign(assigner, priors, preds, scores, gts, valid=None):
    boxes = torch.tensor([list(g) for g in gts], dtype=torch.float32).view(1, -1, 4)
    labels = torch.zeros(boxes.shape[:2], dtype=torch.long)
    mask = torch.ones(labels.shape, dtype=torch.bool) if valid is None else torch.tensor([valid], dtype=torch.bool)
    return assigner.assign(priors, boxes, labels, mask,
                           pred_boxes=torch.tensor(preds, dtype=torch.float32)[None],
                           pred_scores=torch.tensor(scores, dtype=torch.float32).view(1, -1, 1))


def torch_pick(row, k=1):
    """The priors torch.topk keeps on a GT's row of N metrics (0 off its positives): Ultralytics' set."""
    return set(torch.tensor(row, dtype=torch.float32).topk(k).indices.tolist())


def test_top1_keeps_the_largest_metric_and_renormalises(priors):
    res = assign(TaskAlignedAssigner(topk=4, beta=2.0, topk2=1), priors, PREDS, SCORES, [GT])
    assert res.gt_index.tolist() == [[-1, 0, -1, -1]]
    assert res.align_metric[0].tolist() == pytest.approx([0, 0.225, 0, 0])
    assert res.iou[0].tolist() == pytest.approx([0, 0.5, 0, 0])
    # step 5 over the kept priors only: 0.225 / 0.225 * max IoU 0.5 (1.0 was p0's, dropped)
    assert res.score_target[0].tolist() == pytest.approx([0, 0.5, 0, 0])


def test_top2_keeps_two(priors):
    res = assign(TaskAlignedAssigner(topk=4, beta=2.0, topk2=2), priors, PREDS, SCORES, [GT])
    assert res.gt_index.tolist() == [[0, 0, -1, -1]]
    assert res.score_target[0].tolist() == pytest.approx([0.2 / 0.225, 1.0, 0, 0])


def test_topk2_equal_topk_or_above_the_positives_changes_nothing(priors):
    plain = assign(TaskAlignedAssigner(topk=4, beta=2.0), priors, PREDS, SCORES, [GT])
    assert TaskAlignedAssigner(topk=4, topk2=4).topk2 is None  # as Ultralytics: no filter when topk2 == topk
    for k in (3, 4, 9):  # 3 positives
        res = assign(TaskAlignedAssigner(topk=4, beta=2.0, topk2=k), priors, PREDS, SCORES, [GT])
        for name in ("gt_index", "pos_mask", "labels", "iou", "align_metric", "score_target"):
            assert torch.equal(getattr(res, name), getattr(plain, name)), name


def test_ties_lower_prior_index_in_the_plain_rule(priors):
    scores = [0.5, 0.5, 0.5, 0.9]
    preds = [list(GT)] * 4  # every IoU 1: metrics 0.5, 0.5, 0.5
    res = assign(TaskAlignedAssigner(topk=4, beta=2.0, topk2=1), priors, preds, scores, [GT])
    assert res.gt_index.tolist() == [[0, -1, -1, -1]]


def test_ties_in_torch_topk_order_with_keep_zero_metric(priors):
    scores = [0.5, 0.5, 0.5, 0.9]
    preds = [list(GT)] * 4
    res = assign(TaskAlignedAssigner(topk=4, beta=2.0, keep_zero_metric=True, topk2=1), priors, preds, scores, [GT])
    (pick,) = torch_pick([0.5, 0.5, 0.5, 0.0])  # p3 is no positive: 0 on the row
    expected = [[0 if i == pick else -1 for i in range(4)]]
    assert res.gt_index.tolist() == expected


@pytest.mark.parametrize("gt", [(0.0, 0.0, 16.0, 8.0), (8.0, 0.0, 24.0, 8.0)])
def test_all_zero_metric_gt_keeps_what_torch_topk_picks_among_zeros(priors, gt):
    # Predictions far off: every metric 0. With keep_zero_metric the GT's candidates stay positive at
    # metric 0; its row of metrics is all 0, torch.topk picks some prior, and the GT keeps it only if it
    # is one of its positives (Ultralytics multiplies the mask by the pick).
    preds = [[100, 100, 108, 108]] * 4
    res = assign(TaskAlignedAssigner(topk=4, iou_mode="iou", keep_zero_metric=True, topk2=1), priors, preds,
                 [0.9] * 4, [gt])
    positives = {i for i in range(4) if gt[0] < 4 + 8 * i < gt[2]}
    no_filter = assign(TaskAlignedAssigner(topk=4, iou_mode="iou", keep_zero_metric=True), priors, preds,
                       [0.9] * 4, [gt])
    assert set(no_filter.pos_mask[0].nonzero().flatten().tolist()) == positives
    kept = torch_pick([0.0] * 4) & positives
    assert res.gt_index.tolist() == [[0 if i in kept else -1 for i in range(4)]]
    assert not res.score_target.any()  # metric 0: target 0


def test_two_gts_each_keep_their_own_best(priors):
    gts = [(0.0, 0.0, 16.0, 8.0), (16.0, 0.0, 32.0, 8.0)]  # p0, p1 | p2, p3
    preds = [[0, 0, 16, 8], [0, 0, 8, 8], [16, 0, 32, 8], [20, 0, 32, 8]]
    res = assign(TaskAlignedAssigner(topk=4, beta=2.0, topk2=1), priors, preds, [0.3, 0.9, 0.2, 0.8], gts)
    # metrics: p0 0.3*1, p1 0.9*0.25 = 0.225 | p2 0.2*1, p3 0.8*0.75^2 = 0.45
    assert res.gt_index.tolist() == [[0, -1, -1, 1]]


def test_padding_rows_change_nothing_but_gt_indices(priors):
    gts = [(0.0, 0.0, 16.0, 8.0), (16.0, 0.0, 32.0, 8.0)]
    preds = [[0, 0, 16, 8], [0, 0, 8, 8], [16, 0, 32, 8], [20, 0, 32, 8]]
    scores = [0.3, 0.9, 0.2, 0.8]
    a = TaskAlignedAssigner(topk=4, beta=2.0, topk2=1, resolve="all_gts", keep_zero_metric=True)
    plain = assign(a, priors, preds, scores, gts)
    padded = assign(a, priors, preds, scores, [(1e30, 0, 1e30, 8), gts[0], (0, 0, 32, 8), gts[1]],
                    valid=[False, True, False, True])
    assert padded.gt_index.tolist() == [[1, -1, -1, 3]] and plain.gt_index.tolist() == [[0, -1, -1, 1]]
    assert torch.equal(padded.score_target, plain.score_target)


def test_no_gt(priors):
    for gts, valid in (([GT], [False]), ([], [])):
        res = assign(TaskAlignedAssigner(topk=4, topk2=1), priors, PREDS, SCORES,
                     gts if gts else torch.zeros(0, 4).tolist(), valid=valid)
        assert not res.pos_mask.any() and res.gt_index.tolist() == [[-1] * 4]


def test_one_prior():
    one_box = torch.tensor([[0.0, 0.0, 8.0, 8.0]])
    one_grid = PointGenerator(strides=[8], scale=1.0).grid_priors([(1, 1)])
    for priors in (one_box, one_grid):
        res = assign(TaskAlignedAssigner(topk=13, topk2=3, keep_zero_metric=True), priors, [[0, 0, 8, 8]], [0.5],
                     [(0.0, 0.0, 8.0, 8.0)])
        assert res.gt_index.tolist() == [[0]] and res.score_target[0].tolist() == pytest.approx([1.0])


def test_topk2_is_checked():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="topk2"):
            TaskAlignedAssigner(topk2=bad)


def test_e2e_preset_is_tal_ultralytics_at_top7_then_top1():
    o2m, o2o = build_preset("tal-ultralytics"), build_preset("tal-e2e-ultralytics")
    assert (o2o.topk, o2o.topk2, o2m.topk, o2m.topk2) == (7, 1, 10, None)
    same = ("alpha", "beta", "iou_mode", "resolve", "center_min_side", "keep_zero_metric", "center_eps", "eps")
    assert all(getattr(o2o, k) == getattr(o2m, k) for k in same)
    assert list(ASSIGNER_PRESETS).index("tal-e2e-ultralytics") == list(ASSIGNER_PRESETS).index("tal-ultralytics") + 1


def test_e2e_preset_conforms_and_both_forms_are_bit_identical():
    check_assigner(build_preset("tal-e2e-ultralytics"), examples=4).raise_for_failures()
    for seed in range(4):
        sparse, dense = both_forms(build_preset("tal-e2e-ultralytics"), random_case(100 + seed, anchors=False,
                                                                                     num_gts=20))
        assert_same(sparse, dense)
    case = random_case(3, anchors=False)  # every metric 0: rows ranked by torch.topk on both forms
    case["kwargs"]["pred_boxes"] = case["kwargs"]["pred_boxes"] + 1000.0
    sparse, dense = both_forms(build_preset("tal-e2e-ultralytics"), case)
    assert_same(sparse, dense)


def test_second_filter_keeps_at_most_topk2_per_gt_on_random_batches():
    case = random_case(5, anchors=False, num_gts=20)
    for k in (1, 2):
        rule = TaskAlignedAssigner(topk=7, alpha=0.5, iou_mode="ciou", resolve="all_gts", keep_zero_metric=True,
                                   topk2=k)
        sparse, _ = both_forms(rule, case)
        per_gt = torch.stack([(sparse.gt_index == g).sum(1) for g in range(sparse.gt_index.max() + 1)])
        assert int(per_gt.max()) <= k and sparse.num_pos > 0
