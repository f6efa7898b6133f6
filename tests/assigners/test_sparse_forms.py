"""Each rule on a PriorGrid (``assign(grid)``: each GT's window of candidates) against the same rule on all
pairs (``assign(grid.boxes, num_level_priors=..., prior_strides=...)``), bit for bit, on random batches built
to hit the edge cases: GTs from under a pixel to past the image, boxes and predictions on integer coordinates
(ties of IoU, GTs on cell borders), scores on a coarse grid (ties of metric and cost), padding rows, anchors
and points. Also the candidate-table helpers and the tie order."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from detkit.anchors import PointGenerator, YOLOAnchorGenerator
from detkit.assigners.candidates import (
    CandidateTable,
    paint_open_rects,
    pair_budget,
    segment_ranks,
    segment_topk,
    topk_rows,
    window_pairs,
)
from detkit.assigners.presets import ASSIGNER_PRESETS, build_preset

_spec = importlib.util.spec_from_file_location("assigner_conftest", Path(__file__).with_name("conftest.py"))
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)
FACTORIES, assert_same = helpers.FACTORIES, helpers.assert_same

ANCHORS = [[(10, 13), (16, 30), (33, 23)], [(30, 61), (62, 45), (59, 119)], [(116, 90), (156, 198), (373, 326)]]
SIZE = 128
# grid and YOLOv5 take a PriorGrid only (cell arithmetic; bare priors refused): tests/assigners/test_box_rules_tables.py
TWO_FORM = ("atss", "maxiou", "fcos", "tal", "tal_v8", "tal_ultralytics", "simota", "dsl", "dsl_mmyolo")


def priors_of(anchors: bool):
    gen = YOLOAnchorGenerator(ANCHORS, [8, 16, 32]) if anchors else PointGenerator([8, 16, 32])
    return gen.grid_priors([(SIZE // 8,) * 2, (SIZE // 16,) * 2, (SIZE // 32,) * 2])


def random_case(seed: int, anchors: bool, batch: int = 3, num_gts: int = 12, num_classes: int = 5) -> dict:
    g = torch.Generator().manual_seed(seed)
    grid = priors_of(anchors)
    priors, strides, counts = grid
    n = priors.shape[0]
    side = torch.exp(torch.empty(batch, num_gts, 2).uniform_(-1, 5.5, generator=g))  # 0.4 to 245 px
    centre = torch.rand(batch, num_gts, 2, generator=g) * SIZE
    boxes = torch.cat([centre - side / 2, centre + side / 2], -1)
    centres = (priors[:, :2] + priors[:, 2:]) / 2
    pc = centres + torch.randn(batch, n, 2, generator=g) * strides[:, None]
    pwh = strides[:, None] * 3 * torch.exp(torch.randn(batch, n, 2, generator=g) * 0.5)
    pred = torch.cat([pc - pwh / 2, pc + pwh / 2], -1)
    scores = torch.rand(batch, n, num_classes, generator=g) ** 3
    if seed % 2:  # integer coordinates and coarse scores: exact ties everywhere
        boxes, pred, scores = boxes.round(), pred.round(), (scores * 4).round() / 4
    return dict(grid=grid, priors=priors, gt_boxes=boxes,
                gt_labels=torch.randint(0, num_classes, (batch, num_gts), generator=g),
                gt_mask=torch.rand(batch, num_gts, generator=g) > 0.2,
                kwargs=dict(num_level_priors=counts, prior_strides=strides, pred_boxes=pred, pred_scores=scores))


def both_forms(assigner, case: dict):
    """``(assign on the grid, the reference: assign on the bare boxes, all pairs)``."""
    gts = (case["gt_boxes"], case["gt_labels"], case["gt_mask"])
    kw = case["kwargs"]
    on_grid = assigner.assign(case["grid"], *gts, pred_boxes=kw["pred_boxes"], pred_scores=kw["pred_scores"])
    return on_grid, assigner.assign(case["priors"], *gts, **kw)


@pytest.mark.parametrize("name", TWO_FORM)
@pytest.mark.parametrize("anchors", [False, True])
def test_sparse_form_equals_dense_form(name, anchors):
    for seed in range(6):
        sparse, dense = both_forms(FACTORIES[name](), random_case(seed, anchors))
        assert_same(sparse, dense)


PRESETS = ["atss", "iou", "fcos", "tal", "tal-ultralytics", "simota", "dsl", "dsl-mmyolo"]


@pytest.mark.parametrize("name", PRESETS)
def test_presets_sparse_equals_dense(name):
    for seed in range(4):
        sparse, dense = both_forms(build_preset(name), random_case(100 + seed, anchors=False, num_gts=20))
        assert_same(sparse, dense)


@pytest.mark.parametrize("name", TWO_FORM)
def test_sparse_form_chunked_equals_dense(name):
    case = random_case(7, anchors=False)
    with pair_budget(700):  # a few GTs of all pairs (N = 336) or of windows per chunk
        sparse, dense_chunked = both_forms(FACTORIES[name](), case)
    _, dense = both_forms(FACTORIES[name](), case)
    assert_same(sparse, dense)
    assert_same(dense_chunked, dense)


def test_zero_metric_candidates_ranked_on_full_rows(monkeypatch):
    # Ultralytics' rule keeps top-k candidates at metric 0 in torch.topk's order: predictions that
    # miss every GT give all-zero rows, which the sparse form must hand to torch.topk as the dense one.
    case = random_case(3, anchors=False)
    case["kwargs"]["pred_boxes"] = case["kwargs"]["pred_boxes"] + 1000.0  # every IoU (and CIoU) 0
    import detkit.assigners.candidates as candidates

    full_rows = []
    original = candidates._full_row_topk
    monkeypatch.setattr(candidates, "_full_row_topk", lambda *a: full_rows.append(a[0].numel()) or original(*a))
    sparse, dense = both_forms(build_preset("tal-ultralytics"), case)
    assert_same(sparse, dense)
    assert sparse.num_pos > 0  # zero-metric candidates are positive under this rule
    assert full_rows and all(full_rows)  # the GTs' rows went to torch.topk, on the grid and on all pairs


# The dynamic-k rules' fallbacks (wide predictions, GTs decided on all-pairs rows, shared priors on all-pairs
# columns) are counted in tests/assigners/test_dynamic_k.py::test_fallbacks_are_taken_and_agree.


@pytest.mark.parametrize("name", ["tal", "tal_v8"])
def test_priors_that_are_not_grids_go_through_all_pairs(name):
    # Shuffled priors are no grid: every prior is a candidate of every GT, and the result is the grid's,
    # shuffled the same way (continuous values: no tie whose order would follow the prior index).
    grid = priors_of(anchors=False)
    perm = torch.randperm(grid.num_priors, generator=torch.Generator().manual_seed(0))
    case = random_case(0, anchors=False)
    gts, kw = (case["gt_boxes"], case["gt_labels"], case["gt_mask"]), case["kwargs"]
    assigner = FACTORIES[name]()
    on_grid = assigner.assign(grid, *gts, pred_boxes=kw["pred_boxes"], pred_scores=kw["pred_scores"])
    shuffled = assigner.assign(grid.boxes[perm], *gts, pred_boxes=kw["pred_boxes"][:, perm],
                               pred_scores=kw["pred_scores"][:, perm])
    for field in ("gt_index", "pos_mask", "labels", "iou", "align_metric", "score_target"):
        assert torch.equal(getattr(shuffled, field), getattr(on_grid, field)[:, perm]), field
    assert on_grid.num_pos > 0


@pytest.mark.parametrize("anchors", [False, True])
def test_window_pairs_are_the_priors_with_centres_in_the_region(anchors):
    layout = priors_of(anchors)
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(40, 2, generator=g) * 160 - 16
    regions = torch.cat([xy, xy + torch.rand(40, 2, generator=g) * 60], 1).round()  # borders on centres too
    gt, prior = window_pairs(layout, regions[:, None].expand(-1, 3, -1))
    c = layout.centres
    inside = ((c[None, :, 0] > regions[:, 0, None]) & (c[None, :, 0] < regions[:, 2, None])
              & (c[None, :, 1] > regions[:, 1, None]) & (c[None, :, 1] < regions[:, 3, None]))  # (40, N)
    listed = torch.zeros_like(inside)
    listed[gt, prior] = True
    assert not (inside & ~listed).any()  # nothing missing
    closed = ((c[None, :, 0] >= regions[:, 0, None] - 0.1) & (c[None, :, 0] <= regions[:, 2, None] + 0.1)
              & (c[None, :, 1] >= regions[:, 1, None] - 0.1) & (c[None, :, 1] <= regions[:, 3, None] + 0.1))
    assert not (listed & ~closed).any()  # only the region's border is extra
    assert (gt.diff() >= 0).all() and len(set(zip(gt.tolist(), prior.tolist()))) == gt.shape[0]


def test_window_pairs_hand_made():
    # 32 px image, strides 8 and 16: centres 4, 12, 20, 28 (priors 0-15, row-major) and 8, 24 (priors 16-19).
    layout = PointGenerator([8, 16]).grid_priors([(4, 4), (2, 2)])
    regions = torch.tensor([[[0, 10, 14, 30], [30, 30, 31, 31]],  # cols 0-1 x rows 1-3; nothing
                            [[13, 0, 14, 32], [0, 0, 32, 32]],  # no column (rows, but empty); all four
                            [[27, 3, 29, 5], [7, 7, 9, 25]]], dtype=torch.float32)  # prior 3; col 0 x rows 0-1
    gt, prior = window_pairs(layout, regions)
    assert gt.tolist() == [0] * 6 + [1] * 4 + [2] * 3
    assert prior.tolist() == [4, 5, 8, 9, 12, 13, 16, 17, 18, 19, 3, 16, 18]
    gt, prior = window_pairs(layout, regions[:0])
    assert gt.shape == prior.shape == (0,)


# ATSS's window of cells against every distance: tests/assigners/test_box_rules_tables.py


@pytest.mark.parametrize("anchors", [False, True])
def test_painted_rectangles_are_the_strict_inside_test(anchors):
    layout = priors_of(anchors)
    g = torch.Generator().manual_seed(3)
    xy = (torch.rand(2, 20, 2, generator=g) * 20).round() * 8 - 16  # borders on prior centres too
    rects = [torch.cat([xy, xy + (torch.rand(2, 20, 2, generator=g) * 8).round() * 8], -1)[:, :, None]
             .expand(-1, -1, 3, -1).flatten(0, 1) for _ in range(2)]  # (G, L, 4) twice
    image = torch.arange(2).repeat_interleave(20)
    painted = paint_open_rects(layout, image, rects, batch=2).view(2, -1)
    c = layout.centres
    inside = torch.zeros(2, c.shape[0], dtype=torch.bool)
    for r in rects:
        r = r[:, 0]  # (G, 4), the same on every level
        hit = ((c[None, :, 0] > r[:, 0, None]) & (c[None, :, 0] < r[:, 2, None])
               & (c[None, :, 1] > r[:, 1, None]) & (c[None, :, 1] < r[:, 3, None]))  # (G, N)
        inside |= torch.stack([hit[image == i].any(0) for i in range(2)])
    assert torch.equal(painted, inside) and inside.any()


def test_segment_ranks_by_key_then_position():
    segment = torch.tensor([1, 0, 1, 1, 0, 1])
    key = torch.tensor([0.5, 2.0, -0.0, 0.5, 2.0, 0.0])
    assert segment_ranks(segment, key, 2).tolist() == [2, 0, 0, 3, 1, 1]  # -0.0 == 0.0: by position
    assert segment_ranks(segment, key, 2, descending=True).tolist() == [0, 0, 2, 1, 1, 3]


def test_every_rule_with_two_forms_has_a_preset_here():
    assert set(PRESETS) <= set(ASSIGNER_PRESETS)


def test_topk_rows_index_order_on_ties():
    values = torch.tensor([[0.5, 0.9, 0.5, 0.9, 0.1], [0.0, 0.0, 0.0, 0.0, 0.0], [3.0, 1.0, 2.0, 1.0, 1.0]])
    assert topk_rows(values, 3).tolist() == [[1, 3, 0], [0, 1, 2], [0, 2, 1]]
    assert topk_rows(values, 2, largest=False).tolist() == [[4, 0], [0, 1], [1, 3]]
    assert topk_rows(values, 9).shape == (3, 5)  # k clamped to n
    assert topk_rows(values, 0).shape == (3, 0)
    torch_set = topk_rows(values, 3, ties="torch")
    assert torch.equal(torch_set, values.topk(3).indices)


def _table(rows, priors, num_priors):
    row = torch.tensor(rows)
    g = int(row.max()) + 1 if len(rows) else 0
    return CandidateTable(image=torch.zeros(g, dtype=torch.long), slot=torch.arange(g), row=row,
                          prior=torch.tensor(priors), num_gts=g, num_priors=num_priors)


def test_segment_topk_index_ties_among_listed_pairs():
    table = _table([0, 0, 0, 0, 1, 1], [2, 5, 7, 9, 0, 3], num_priors=10)
    key = torch.tensor([0.3, 0.7, 0.3, 0.3, 0.0, 0.1])
    assert segment_topk(table, key, 2).tolist() == [True, True, False, False, True, True]
    assert segment_topk(table, key, 3).tolist() == [True, True, True, False, True, True]


def test_segment_topk_torch_ties_are_torch_topk_on_full_rows():
    # row 0: two keys above 0 (< k = 3): the cut falls among the zeros, listed (prior 4) and unlisted alike;
    # row 1: a tie at the k-th key; row 2: decided without ties (never rebuilt)
    table = _table([0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2], [1, 4, 6, 0, 2, 5, 8, 1, 2, 3, 9], num_priors=10)
    key = torch.tensor([0.5, 0.0, 0.25, 0.5, 0.25, 0.25, 0.75, 0.9, 0.8, 0.7, 0.1])
    full = torch.zeros(3, 10)
    full[table.row, table.prior] = key
    kept = torch.zeros(3, 10, dtype=torch.bool).scatter_(1, full.topk(3).indices, True)
    assert segment_topk(table, key, 3, ties="torch").tolist() == kept[table.row, table.prior].tolist()
    assert segment_topk(table, key, 3, ties="torch")[7:].tolist() == [True, True, True, False]
