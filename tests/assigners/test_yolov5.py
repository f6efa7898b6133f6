"""YOLOv5Assigner on hand-computed cases: one level, stride 8, a 4x4 grid (32 px), two anchors per
cell, (8, 8) and (24, 12). Prior index = (gy * 4 + gx) * 2 + anchor."""

from __future__ import annotations

import pytest
import torch

from detkit.anchors import YOLOAnchorGenerator
from detkit.assigners import YOLOv5Assigner

GRID = YOLOAnchorGenerator(base_sizes=[[(8, 8), (24, 12)]], strides=[8]).grid_priors([(4, 4)])


def assign(*gts, mask=None, assigner=None):
    boxes = torch.tensor([list(g) for g in gts], dtype=torch.float32).view(1, -1, 4)
    labels = torch.arange(boxes.shape[1]).view(1, -1)
    mask = torch.ones(labels.shape, dtype=torch.bool) if mask is None else torch.tensor([mask])
    return (assigner or YOLOv5Assigner()).assign(GRID, boxes, labels, mask)


def positives(res, image=0) -> dict[int, int]:
    idx = res.pos_mask[image].nonzero().flatten().tolist()
    return {i: res.gt_index[image, i].item() for i in idx}


def test_ratio_test_and_the_two_nearest_neighbours():
    # Centre (13, 10) -> g = (1.625, 1.25): own cell (1, 1), right neighbour (2, 1) (x fraction
    # 0.625 > 0.5), upper neighbour (1, 0) (y fraction 0.25 < 0.5). Size 10x6: ratios to (8, 8)
    # are 1.25 / 1.33, to (24, 12) 2.4 / 2: both anchors match, in all three cells.
    res = assign((8, 7, 18, 13))
    assert positives(res) == {2: 0, 3: 0, 10: 0, 11: 0, 12: 0, 13: 0}
    assert not res.ignore_mask.any()
    assert res.labels[0, 10].item() == 0
    assert res.iou[0, 10].item() == pytest.approx(40 / (64 + 60 - 40))  # prior (8, 8, 16, 16) vs GT


def test_gt_smaller_than_a_stride():
    # 3x3 at (5, 5): only anchor (8, 8) is within 4x (8/3 = 2.67); cell (0, 0) has no left or upper
    # neighbour (g = 0.625 < 1), and claims the right (1, 0) and lower (0, 1) ones.
    assert positives(assign((3.5, 3.5, 6.5, 6.5))) == {0: 0, 2: 0, 8: 0}
    # 2x2: 8 / 2 = 4 is not < anchor_t = 4, and no other anchor is closer: no positive at all.
    assert positives(assign((4, 4, 6, 6))) == {}


def test_gt_larger_than_the_image_with_its_centre_on_a_cell_corner():
    # 48x40 centred on (16, 16): g = (2, 2) exactly. Only anchor (24, 12) matches (2 and 3.33).
    # Fractions 0 claim the left (1, 2) and upper (2, 1) cells; the right/lower claims floor(2.5) = 2
    # land on the own cell (2, 2) again (YOLOv5 lists it three times).
    res = assign((-8, -4, 40, 36))
    assert positives(res) == {13: 0, 19: 0, 21: 0}
    # 72x72: every ratio is >= 4, nothing matches.
    assert positives(assign((-20, -20, 52, 52))) == {}


def test_shared_prior_goes_to_the_later_direction_then_the_later_gt():
    # A centred on (12, 12) (fractions 0.5: no neighbour) claims cell (1, 1) = priors 10, 11 as its
    # own cell; B centred on (19, 12) claims (2, 1) = 12, 13 as its own and (1, 1) as its *left*
    # neighbour. YOLOv5 lists neighbour claims after own-cell claims, so B wins 10 and 11 in
    # either GT order.
    a, b = (8, 8, 16, 16), (15, 8, 23, 16)
    assert positives(assign(a, b)) == {10: 1, 11: 1, 12: 1, 13: 1}
    assert positives(assign(b, a)) == {10: 0, 11: 0, 12: 0, 13: 0}
    # Same direction (two GTs centred in the same cell): the later GT in the list wins.
    assert positives(assign(a, (8, 9, 16, 15))) == {10: 1, 11: 1}


def test_no_gt_and_padded_rows():
    assert positives(assign((8, 7, 18, 13), mask=[False])) == {}
    res = assign((100, 100, 300, 300), (8, 7, 18, 13), (0, 0, 0, 0), mask=[False, True, False])
    assert positives(res) == {2: 1, 3: 1, 10: 1, 11: 1, 12: 1, 13: 1}


def test_offset_zero_keeps_the_centre_cell_only():
    assert positives(assign((8, 7, 18, 13), assigner=YOLOv5Assigner(offset=0.0))) == {10: 0, 11: 0}


@pytest.mark.parametrize("kwargs", [dict(anchor_t=1.0), dict(offset=0.6), dict(offset=-0.1)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        YOLOv5Assigner(**kwargs)


def test_needs_a_prior_grid():
    # a bare tensor laid out as a grid, with its counts and strides, is refused: no layout read back from boxes
    boxes, labels, mask = torch.tensor([[[8.0, 7.0, 18.0, 13.0]]]), torch.zeros(1, 1, dtype=torch.long), torch.ones(
        1, 1, dtype=torch.bool)
    with pytest.raises(ValueError, match="YOLOv5Assigner needs the priors as a PriorGrid"):
        YOLOv5Assigner().assign(GRID.boxes, boxes, labels, mask, num_level_priors=GRID.num_level_priors,
                                prior_strides=GRID.strides)
