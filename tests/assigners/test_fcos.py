"""FCOSAssigner on hand-computed cases. Points of stride 8 on a 4x4 grid (centres 4, 12, 20, 28;
index gy * 4 + gx), and a second level of stride 16 on a 2x2 grid (centres 8, 24; index 16 + ...)."""

from __future__ import annotations

import pytest
import torch

from detkit.anchors import PointGenerator
from detkit.assigners import FCOSAssigner

ONE_LEVEL = PointGenerator(strides=[8], scale=1.0).grid_priors([(4, 4)])
TWO_LEVELS = PointGenerator(strides=[8, 16], scale=1.0).grid_priors([(4, 4), (2, 2)])
OPEN = [(-1, 1e8)]


def assign(*gts, mask=None, grid=ONE_LEVEL, **kwargs):
    priors, strides, counts = grid
    boxes = torch.tensor([list(g) for g in gts], dtype=torch.float32).view(1, -1, 4)
    labels = torch.zeros(boxes.shape[:2], dtype=torch.long)
    mask = torch.ones(labels.shape, dtype=torch.bool) if mask is None else torch.tensor([mask])
    kwargs.setdefault("scale_ranges", OPEN)
    return FCOSAssigner(**kwargs).assign(priors, boxes, labels, mask, num_level_priors=counts, prior_strides=strides)


def positives(res) -> dict[int, int]:
    return {i: res.gt_index[0, i].item() for i in res.pos_mask[0].nonzero().flatten().tolist()}


def test_centre_region_is_clipped_to_the_box():
    # (0, 0, 32, 8): centre (16, 4). Radius 1.5 * 8 = 12 -> region x (4, 28), y clipped to (0, 8):
    # only centres x = 12, 20 on row y = 4 are strictly inside.
    assert positives(assign((0, 0, 32, 8))) == {1: 0, 2: 0}
    assert positives(assign((0, 0, 32, 8), center_sampling_radius=None)) == {0: 0, 1: 0, 2: 0, 3: 0}
    # Radius 0.5 -> region (12, 20): no centre strictly inside, no positive.
    assert positives(assign((0, 0, 32, 8), center_sampling_radius=0.5)) == {}


def test_regression_range_per_level_inclusive_at_both_ends():
    # (0, 0, 24, 16), ranges [-1, 16] and [16, 1e8]. Level 0 region (0, 24) x (0, 16): centres
    # (12, 4) and (12, 12) reach 12; (4, *) and (20, *) reach 20 > 16. Level 1 (radius 24, the
    # whole box): (8, 8) reaches exactly 16 (right side), in [16, 1e8].
    res = assign((0, 0, 24, 16), grid=TWO_LEVELS, scale_ranges=[(-1, 16), (16, 1e8)])
    assert positives(res) == {1: 0, 5: 0, 16: 0}
    res = assign((0, 0, 24, 16), grid=TWO_LEVELS, scale_ranges=[(-1, 15), (17, 1e8)])
    assert positives(res) == {1: 0, 5: 0}


def test_gt_smaller_than_a_stride():
    assert positives(assign((9, 9, 11, 11))) == {}  # holds no centre
    res = assign((11, 11, 13, 13))  # holds (12, 12)
    assert positives(res) == {5: 0}
    assert res.iou[0, 5].item() == pytest.approx(4 / 64)  # prior box 8x8 (scale 1) vs 2x2 inside it


def test_gt_larger_than_the_image():
    # (-16, -16, 48, 48): centre (16, 16), region (4, 28)^2 -> centres 12 and 20 on both axes.
    assert positives(assign((-16, -16, 48, 48))) == {5: 0, 6: 0, 9: 0, 10: 0}
    # The nearest side is 28 px away, the farthest 36: nothing fits [-1, 32].
    assert positives(assign((-16, -16, 48, 48), scale_ranges=[(-1, 32)])) == {}


def test_smallest_area_wins_then_lowest_index():
    # (12, 12) lies in both; the 8x8 GT (area 64) beats the 24x24 one (576) whatever the order.
    assert positives(assign((0, 0, 24, 24), (8, 8, 16, 16)))[5] == 1
    assert positives(assign((8, 8, 16, 16), (0, 0, 24, 24)))[5] == 0
    # Equal areas (64): the lower GT index wins the shared prior.
    assert positives(assign((8, 8, 16, 16), (10, 10, 18, 18))) == {5: 0}
    assert positives(assign((10, 10, 18, 18), (8, 8, 16, 16))) == {5: 0}


def test_no_gt_and_padded_rows():
    assert positives(assign((0, 0, 32, 8), mask=[False])) == {}
    res = assign((8, 8, 16, 16), (0, 0, 32, 8), (0, 0, 0, 0), mask=[False, True, False])
    assert positives(res) == {1: 1, 2: 1}


def test_ranges_must_match_the_levels():
    with pytest.raises(ValueError, match="scale_ranges"):
        assign((0, 0, 8, 8), grid=TWO_LEVELS)


@pytest.mark.parametrize("kwargs", [dict(center_sampling_radius=0), dict(scale_ranges=[(5, 5)]),
                                    dict(scale_ranges=[])])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        FCOSAssigner(**kwargs)
