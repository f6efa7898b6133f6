"""Properties every assigner must have, parametrised over all of them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from detkit.anchors import grid_from_levels
from detkit.assigners import Assigner, AssignResult
from detkit.assigners.candidates import pair_budget

_spec = importlib.util.spec_from_file_location("assigner_conftest", Path(__file__).with_name("conftest.py"))
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)
random_batch, run, assert_same = helpers.random_batch, helpers.run, helpers.assert_same
PRED_AWARE, ORDER_DEPENDENT = helpers.PRED_AWARE, helpers.ORDER_DEPENDENT


def check_consistent(res: AssignResult, batch: int, num_priors: int) -> None:
    for name in ("gt_index", "pos_mask", "ignore_mask", "labels", "iou"):
        assert getattr(res, name).shape == (batch, num_priors), name
    assert res.gt_index.dtype == torch.long and res.labels.dtype == torch.long
    assert res.pos_mask.dtype == torch.bool and res.ignore_mask.dtype == torch.bool
    assert res.iou.dtype == torch.float32
    assert torch.equal(res.pos_mask, res.gt_index >= 0)
    assert not (res.pos_mask & res.ignore_mask).any()
    assert (res.labels[~res.pos_mask] == -1).all() and (res.gt_index[~res.pos_mask] == -1).all()
    assert (res.iou[~res.pos_mask] == 0).all() and torch.isfinite(res.iou).all()


def test_is_an_assigner(factory):
    assigner = factory()
    assert isinstance(assigner, Assigner)
    assert assigner.uses_predictions == (type(assigner).__name__ in PRED_AWARE)


def test_random_batch_is_consistent(factory, grid):
    data = random_batch(0, pad_from=4)
    res = run(factory(), grid, data)
    check_consistent(res, 3, grid.num_priors)
    assert res.num_pos > 0
    assert (res.gt_index[res.pos_mask] < 4).all()  # padding rows 4.. never assigned
    labels = data["gt_labels"].gather(1, res.gt_index.clamp(min=0))
    assert torch.equal(res.labels[res.pos_mask], labels[res.pos_mask])


def test_no_gt_gives_all_negatives(factory, grid):
    data = random_batch(1)
    data["gt_mask"][:] = False
    res = run(factory(), grid, data)
    check_consistent(res, 3, grid.num_priors)
    assert not res.pos_mask.any() and not res.ignore_mask.any()


def test_zero_gt_rows(factory, grid):
    data = random_batch(1)
    for key in ("gt_boxes", "gt_labels", "gt_mask"):
        data[key] = data[key][:, :0]
    res = run(factory(), grid, data)
    assert not res.pos_mask.any() and not res.ignore_mask.any()


def test_one_image_without_gt_in_a_batch(factory, grid):
    data = random_batch(2)
    data["gt_mask"][1] = False
    res = run(factory(), grid, data)
    assert not res.pos_mask[1].any() and not res.ignore_mask[1].any()
    assert res.pos_mask[0].any() and res.pos_mask[2].any()


def test_padded_garbage_rows_change_nothing(factory, grid):
    data = random_batch(3)
    ref = run(factory(), grid, data)
    g = torch.Generator().manual_seed(9)
    junk = torch.rand(3, 4, 4, generator=g) * 200 - 50  # inverted and huge boxes too
    padded = dict(data)
    padded["gt_boxes"] = torch.cat([data["gt_boxes"][:, :2], junk, data["gt_boxes"][:, 2:]], 1)
    padded["gt_labels"] = torch.cat([data["gt_labels"][:, :2], torch.full((3, 4), 999), data["gt_labels"][:, 2:]], 1)
    padded["gt_mask"] = torch.cat([data["gt_mask"][:, :2], torch.zeros(3, 4, dtype=torch.bool),
                                   data["gt_mask"][:, 2:]], 1)
    res = run(factory(), grid, padded)
    # GT j >= 2 moved to j + 4.
    expect = torch.where(ref.gt_index >= 2, ref.gt_index + 4, ref.gt_index)
    assert torch.equal(res.gt_index, expect)
    for name in ("pos_mask", "ignore_mask", "labels", "iou", "align_metric", "score_target"):
        x, y = getattr(res, name), getattr(ref, name)
        assert x is None and y is None or torch.equal(x, y), name


def test_zero_area_gt_is_treated_like_padding(factory, grid):
    data = random_batch(4)
    ref_data = dict(data, gt_mask=data["gt_mask"].clone())
    ref_data["gt_mask"][:, 1] = False
    flat = dict(data, gt_boxes=data["gt_boxes"].clone())
    flat["gt_boxes"][:, 1, 2] = flat["gt_boxes"][:, 1, 0]  # zero width
    assert_same(run(factory(), grid, flat), run(factory(), grid, ref_data))


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_chunked_equals_unchunked(factory, grid, chunk):
    # candidate tables cut every `chunk` GTs' worth of all-pairs (N pairs per GT) or a few window pairs
    data = random_batch(5, num_gts=7, pad_from=6)
    whole = run(factory(), grid, data)
    with pair_budget(chunk * grid.num_priors):
        assert_same(run(factory(), grid, data), whole)
    with pair_budget(chunk):
        assert_same(run(factory(), grid, data), whole)
        assert_same(factory().assign(grid, data["gt_boxes"], data["gt_labels"], data["gt_mask"],
                                     num_level_priors=grid.num_level_priors, prior_strides=grid.strides,
                                     pred_boxes=data["pred_boxes"], pred_scores=data["pred_scores"]), whole)


@pytest.mark.parametrize("seed", [11, 12])
def test_grid_equals_all_pairs(factory, grid, seed):
    """``assign(grid)`` (each GT's window of the grid) == ``assign(grid.boxes, ...)`` (all pairs), bit for bit."""
    data = random_batch(seed, num_gts=9, pad_from=7)
    data["gt_boxes"] = data["gt_boxes"].round()  # borders on prior centres, IoU ties
    on_grid = factory().assign(grid, data["gt_boxes"], data["gt_labels"], data["gt_mask"],
                               num_level_priors=grid.num_level_priors, prior_strides=grid.strides,  # as heads do
                               pred_boxes=data["pred_boxes"], pred_scores=data["pred_scores"])
    assert_same(on_grid, run(factory(), grid, data))


def test_batch_equals_per_image(factory, grid):
    data = random_batch(6, num_gts=6)
    data["gt_mask"][0, 3:] = False
    res = run(factory(), grid, data)
    for i in range(3):
        one = {k: v[i:i + 1] for k, v in data.items()}
        single = run(factory(), grid, one)
        for name in ("gt_index", "pos_mask", "ignore_mask", "labels", "iou"):
            assert torch.equal(getattr(single, name)[0], getattr(res, name)[i]), (i, name)


def test_fp16_inputs_are_assigned_in_fp32(factory, grid):
    data = random_batch(7)
    half = {k: v.half() if v.is_floating_point() else v for k, v in data.items()}
    as_fp32 = {k: v.float() if v.is_floating_point() else v for k, v in half.items()}
    priors, strides, counts = grid
    # the grid of the fp16-rounded boxes, for the reference and for rules that need a PriorGrid
    rounded = grid_from_levels(priors.half().float(), strides, [
        (lv.height, lv.width, lv.anchors, lv.stride, lv.offset, lv.anchor_sizes) for lv in grid.levels])
    try:
        res = run(factory(), (priors.half(), strides, counts), half)  # fp16 prior boxes
    except ValueError as e:
        assert "PriorGrid" in str(e)
        res = run(factory(), rounded, half)
    assert res.iou.dtype == torch.float32
    assert_same(res, run(factory(), rounded, as_fp32))


def test_gt_larger_than_the_image(factory, grid):
    data = random_batch(8, num_gts=1)
    data["gt_boxes"][:] = torch.tensor([-40.0, -30.0, 110.0, 120.0])
    res = run(factory(), grid, data)
    check_consistent(res, 3, grid.num_priors)
    assert res.pos_mask.any(dim=1).all()


def test_gt_order_permutation_permutes_gt_index(factory, grid, request):
    if request.node.callspec.params["factory"] in ORDER_DEPENDENT:
        pytest.skip("order-dependent by design (the later GT wins a shared prior)")
    data = random_batch(10, num_gts=5)
    perm = torch.tensor([3, 0, 4, 1, 2])
    permuted = {k: v[:, perm] if k.startswith("gt_") else v for k, v in data.items()}
    ref, res = run(factory(), grid, data), run(factory(), grid, permuted)
    inverse = torch.argsort(perm)  # original GT j sits at inverse[j]
    expect = torch.where(ref.pos_mask, inverse[ref.gt_index.clamp(min=0)], ref.gt_index)
    assert torch.equal(res.gt_index, expect)
    assert torch.equal(res.iou, ref.iou)


@pytest.mark.parametrize("name, small, huge", [
    ("atss", dict(topk=128), dict(topk=1000)),  # 128 = the largest level (8x8 cells, 2 anchors)
    ("tal", dict(topk=168), dict(topk=1000)),
    ("simota", dict(candidate_topk=168), dict(candidate_topk=1000)),
    ("dsl", dict(topk=168), dict(topk=1000)),
])
def test_topk_larger_than_the_priors_takes_them_all(name, small, huge, grid):
    from detkit.assigners import ATSSAssigner, DynamicSoftLabelAssigner, SimOTAAssigner, TaskAlignedAssigner

    cls = {"atss": ATSSAssigner, "tal": TaskAlignedAssigner, "simota": SimOTAAssigner,
           "dsl": DynamicSoftLabelAssigner}[name]
    data = random_batch(11)
    assert_same(run(cls(**huge), grid, data), run(cls(**small), grid, data))
