"""GridAssigner on hand-computed cases (a 32 px input: 4x4 cells of 8 px, 2x2 of 16 px)."""

from __future__ import annotations

import pytest
import torch

from detkit.anchors import YOLOAnchorGenerator
from detkit.assigners import GridAssigner

# Level 0 (stride 8): anchors a0 (8,8), a1 (16,8); level 1 (stride 16): a2 (24,24), a3 (40,20).
GEN = YOLOAnchorGenerator(base_sizes=[[(8, 8), (16, 8)], [(24, 24), (40, 20)]], strides=[8, 16])
GRID = GEN.grid_priors([(4, 4), (2, 2)], "cpu")  # 32 + 8 priors
PRIORS = GRID.boxes


def assign(assigner, *gts):
    boxes = torch.tensor([list(g) for g in gts], dtype=torch.float32).view(1, -1, 4)
    labels = torch.arange(boxes.shape[1]).view(1, -1)
    return assigner.assign(GRID, boxes, labels, torch.ones(labels.shape, dtype=torch.bool))


def positives(res):
    return {int(i): int(res.gt_index[0, i]) for i in res.pos_mask[0].nonzero().flatten()}


# GT 20x20 centred on (8, 8): shape IoUs a0 0.16, a1 0.32, a2 400/576 = 0.694, a3 0.5.
# Level 0 cell (1, 1) -> priors 10 (a0), 11 (a1); level 1 cell (0, 0) -> priors 32 (a2), 33 (a3).
SQUARE = (-2, -2, 18, 18)


def test_yolov3_best_anchor_only_and_ignore():
    res = assign(GridAssigner(extra_match_thr=None, ignore_iou_thr=0.45), SQUARE)
    assert positives(res) == {32: 0}
    # prior 33 (40x20 on the same centre) has IoU 0.5 > 0.45 and is not positive -> ignored.
    assert res.ignore_mask[0].nonzero().flatten().tolist() == [33]
    assert res.iou[0, 32].item() == pytest.approx(400 / 576)


def test_yolov4_extra_anchors_above_threshold():
    res = assign(GridAssigner(extra_match_thr=0.213, ignore_iou_thr=0.45), SQUARE)
    assert positives(res) == {11: 0, 32: 0, 33: 0}  # a1 (0.32), a2 (best), a3 (0.5); a0 0.16 < 0.213
    assert not res.ignore_mask.any()


def test_extra_threshold_is_strict():
    res = assign(GridAssigner(extra_match_thr=0.5, ignore_iou_thr=None), SQUARE)
    assert positives(res) == {32: 0}  # a3's shape IoU is exactly 0.5: not > 0.5


def test_later_gt_wins_a_shared_prior():
    res = assign(GridAssigner(extra_match_thr=None, ignore_iou_thr=None), SQUARE, (-1, -1, 17, 17))
    assert positives(res) == {32: 1}


def test_centre_on_a_cell_border_goes_to_the_cell_it_starts():
    # 8x8 GT centred on (16, 16): level 0 cell floor(16/8) = 2 -> prior (2*4+2)*2 + 0 = 20.
    res = assign(GridAssigner(extra_match_thr=None, ignore_iou_thr=None), (12, 12, 20, 20))
    assert positives(res) == {20: 0}


def test_gt_larger_than_image_uses_clamped_cell():
    # Centre (40, 40) lies off the 32 px grid: the last cell of the best anchor's level (a3: 40x20
    # vs 60x60 -> 800/3600; a2: 576/3600; best a3) -> level 1 cell (1, 1) -> 32 + 3*2 + 1 = 39.
    res = assign(GridAssigner(extra_match_thr=None, ignore_iou_thr=None), (10, 10, 70, 70))
    assert positives(res) == {39: 0}


def test_ignore_with_predictions():
    pred = PRIORS.clone()[None]
    pred[0, 5] = torch.tensor(SQUARE, dtype=torch.float32)  # a prediction exactly on the GT
    res = GridAssigner(extra_match_thr=None, ignore_iou_thr=0.7, ignore_with_pred=True).assign(
        GRID, torch.tensor([[SQUARE]], dtype=torch.float32), torch.zeros(1, 1, dtype=torch.long),
        torch.ones(1, 1, dtype=torch.bool), pred_boxes=pred)
    assert res.ignore_mask[0].nonzero().flatten().tolist() == [5]


def test_needs_a_prior_grid():
    # The rule is cell arithmetic: a bare tensor of boxes (even laid out as a grid, with its level counts
    # and strides) is refused with a ValueError naming the PriorGrid; no layout is read back from boxes.
    args = (torch.tensor([[SQUARE]], dtype=torch.float32), torch.zeros(1, 1, dtype=torch.long),
            torch.ones(1, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="GridAssigner needs the priors as a PriorGrid"):
        GridAssigner().assign(PRIORS, *args, num_level_priors=GRID.num_level_priors, prior_strides=GRID.strides)
    with pytest.raises(ValueError, match="needs pred_boxes"):
        GridAssigner(ignore_with_pred=True).assign(GRID, *args)
