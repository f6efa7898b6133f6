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


def _two_level_grid():
    # 64 px: 5 x 5 priors every 8 px (centres 4, 12, ...; priors 0-63) and 10 x 10 priors at 16, 48 (64-67).
    from detkit.anchors import YOLOAnchorGenerator

    return YOLOAnchorGenerator([[(5, 5)], [(10, 10)]], [8, 32]).grid_priors([(8, 8), (2, 2)])


def test_level_iou_bounds_hand_made_and_never_below_an_iou():
    from detkit.assigners.max_iou import level_iou_bounds
    from detkit.boxes import pairwise_iou

    grid = _two_level_grid()
    bound = level_iou_bounds(grid, torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 20.0, 5.0]]))
    expected = torch.tensor([[16 / 25, 16 / 100], [25 / 100, 50 / 100]], dtype=torch.float64)
    assert torch.allclose(bound, expected * (1 + 1e-4) + 1e-6, rtol=0, atol=1e-12)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=g) * 64
    boxes = torch.cat([xy, xy + torch.rand(200, 2, generator=g) * 20 + 0.5], 1)
    iou = pairwise_iou(boxes, grid.boxes)  # (200, 68)
    bound = level_iou_bounds(grid, boxes)
    assert (iou[:, :64].amax(1) <= bound[:, 0]).all() and (iou[:, 64:].amax(1) <= bound[:, 1]).all()


def test_low_quality_found_on_a_level_left_out():
    # GT 0 (10 x 10 at 32, 32) overlaps no 10 x 10 prior (its likeliest level) and reaches 0.109 with four 5 x 5
    # priors, a level that cannot reach neg_iou_thr: taken again on all levels, it gets them. GT 1 reaches 0.39
    # with prior 67, above any 5 x 5 prior's bound (0.098): decided on its likeliest level alone.
    grid = _two_level_grid()
    gt = torch.tensor([[[27.0, 27.0, 37.0, 37.0], [40.0, 40.0, 56.0, 56.0]]])
    labels, mask = torch.tensor([[0, 1]]), torch.ones(1, 2, dtype=torch.bool)
    assigner = MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4)
    on_grid = assigner.assign(grid, gt, labels, mask)
    assert (on_grid.gt_index[0] == 0).nonzero().flatten().tolist() == [27, 28, 35, 36]
    assert (on_grid.gt_index[0] == 1).nonzero().flatten().tolist() == [67]
    assert torch.allclose(on_grid.iou[0, [27, 67]], torch.tensor([12.25 / 112.75, 100 / 256]))
    all_pairs = assigner.assign(grid.boxes, gt, labels, mask, num_level_priors=[64, 4])
    for field in ("gt_index", "pos_mask", "ignore_mask", "labels", "iou"):
        assert torch.equal(getattr(on_grid, field), getattr(all_pairs, field)), field


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_levels_left_out_change_nothing(seed, monkeypatch):
    # YOLO's anchors on three levels, GTs from 1 to 200 px: the grid's table (levels left out, some GTs taken again
    # on all levels) against all pairs of the bare priors, which leaves nothing out.
    import detkit.assigners.max_iou as mi
    from detkit.anchors import YOLOAnchorGenerator

    tables = mi.candidate_tables
    calls = []
    monkeypatch.setattr(mi, "candidate_tables", lambda *a, **k: calls.append(1) or tables(*a, **k))
    anchors = [[(10, 13), (16, 30), (33, 23)], [(30, 61), (62, 45), (59, 119)], [(116, 90), (156, 198), (373, 326)]]
    grid = YOLOAnchorGenerator(anchors, [8, 16, 32]).grid_priors([(16, 16), (8, 8), (4, 4)])
    g = torch.Generator().manual_seed(seed)
    side = torch.exp(torch.empty(2, 40, 2).uniform_(0, 5.3, generator=g))
    centre = torch.rand(2, 40, 2, generator=g) * 128
    gt = torch.cat([centre - side / 2, centre + side / 2], -1)
    if seed == 2:
        gt = gt.round()  # exact ties of IoU
    labels, mask = torch.randint(0, 3, (2, 40), generator=g), torch.rand(2, 40, generator=g) > 0.1
    for assigner in (MaxIoUAssigner(0.5, 0.4), MaxIoUAssigner(0.6, 0.3, min_pos_iou=0.1)):
        on_grid = assigner.assign(grid, gt, labels, mask)
        all_pairs = assigner.assign(grid.boxes, gt, labels, mask, num_level_priors=grid.num_level_priors)
        for field in ("gt_index", "pos_mask", "ignore_mask", "labels", "iou"):
            assert torch.equal(getattr(on_grid, field), getattr(all_pairs, field)), field
    assert len(calls) > 4  # some GTs were taken again on all levels
