"""Memory, one strategy: candidate tables processed in chunks of whole GTs of at most a pair budget, and the
per-prior running best that makes the chunks invisible in the result."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from detkit.anchors import YOLOAnchorGenerator
from detkit.assigners.base import prepare
from detkit.assigners.candidates import (
    PAIR_BUDGET,
    PriorBest,
    _chunk_bounds,
    candidate_tables,
    current_pair_budget,
    pair_budget,
    scatter_best_flat,
)

_spec = importlib.util.spec_from_file_location("assigner_conftest", Path(__file__).with_name("conftest.py"))
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


@pytest.mark.parametrize("name", sorted(helpers.FACTORIES))
def test_no_rule_has_a_second_memory_setting(name):
    """max_gt_chunk (GT chunking on top of the pair budget) is gone from every rule."""
    assert not hasattr(helpers.FACTORIES[name](), "max_gt_chunk")
    with pytest.raises(TypeError, match="max_gt_chunk"):
        helpers.FACTORIES[name](max_gt_chunk=2)


def test_chunk_bounds_hold_whole_gts_within_the_budget():
    counts = torch.tensor([3, 4, 0, 5, 9, 1])
    assert _chunk_bounds(counts, 100) == [(0, 6)]
    assert _chunk_bounds(counts, 7) == [(0, 3), (3, 4), (4, 5), (5, 6)]  # a GT over the budget is a chunk alone
    assert _chunk_bounds(counts, 8) == [(0, 3), (3, 4), (4, 5), (5, 6)]
    assert _chunk_bounds(counts, 12) == [(0, 4), (4, 6)]
    assert _chunk_bounds(torch.zeros(0, dtype=torch.long), 5) == []


def test_pair_budget_is_scoped_and_checked():
    assert current_pair_budget() == PAIR_BUDGET
    with pair_budget(5):
        assert current_pair_budget() == 5
        with pair_budget(2):
            assert current_pair_budget() == 2
        assert current_pair_budget() == 5
    assert current_pair_budget() == PAIR_BUDGET
    for bad in (0, -3, 1.5, True):
        with pytest.raises(ValueError, match="pair budget"), pair_budget(bad):
            pass


def test_candidate_tables_chunk_the_all_pairs_table_by_whole_gts():
    grid = YOLOAnchorGenerator(base_sizes=[[(8, 8)]], strides=[8]).grid_priors([(2, 2)])  # N = 4
    mask = torch.tensor([[True, False, True], [False, True, False]])
    boxes = torch.tensor([[0.0, 0.0, 9.0, 9.0]]).expand(2, 3, 4)
    p, gt = prepare(grid.boxes, boxes, torch.zeros(2, 3, dtype=torch.long), mask)
    with pair_budget(9):  # two GTs (8 pairs) per chunk
        tables = list(candidate_tables(p, gt))
    assert [t.num_rows for t in tables] == [2, 1]
    assert tables[0].image.tolist() == [0, 0] and tables[0].slot.tolist() == [0, 2]
    assert tables[0].row.tolist() == [0] * 4 + [1] * 4 and tables[0].prior.tolist() == [0, 1, 2, 3] * 2
    assert tables[0].gt_index.tolist() == [0] * 4 + [2] * 4  # image * M + slot
    assert tables[1].gt_index.tolist() == [4] * 4 and tables[1].pred_index.tolist() == [4, 5, 6, 7]
    kept = tables[0].select(tables[0].prior % 2 == 1)
    assert kept.row.tolist() == [0, 0, 1, 1] and kept.owner.tolist() == [0, 0, 2, 2]
    # windows on the grid: the priors whose centre (4 or 12) lies in the GT box, on its only level
    p, gt = prepare(grid, boxes, torch.zeros(2, 3, dtype=torch.long), mask)
    regions = gt.boxes[gt.valid][:, None]  # (G, 1, 4)
    (table,) = candidate_tables(p, gt, regions)
    assert table.row.tolist() == [0, 1, 2] and table.prior.tolist() == [0, 0, 0]


def test_prior_best_ties_keep_the_lowest_gt_whatever_the_chunks():
    best = PriorBest(1, 3, torch.device("cpu"), fill=-1.0)
    best.update(torch.tensor([0, 1, 1]), torch.tensor([0.5, 0.7, 0.7]), torch.tensor([4, 4, 2]))
    best.update(torch.tensor([0, 2]), torch.tensor([0.5, -1.0]), torch.tensor([1, 0]))  # a tie later: kept
    value, gt = best.result()
    assert value.tolist() == [[0.5, pytest.approx(0.7), -1.0]] and gt.tolist() == [[4, 2, -1]]
    cheapest = PriorBest(1, 2, torch.device("cpu"), fill=float("inf"), lowest=True)
    cheapest.update(torch.tensor([0, 0, 1]), torch.tensor([3.0, 2.0, 2.0]), torch.tensor([0, 1, 5]))
    cheapest.update(torch.tensor([1]), torch.tensor([1.0]), torch.tensor([6]))
    assert [t.tolist() for t in cheapest.result()] == [[[2.0, 1.0]], [[1, 6]]]


def test_scatter_best_flat_leaves_out_fill():
    best, owner = scatter_best_flat(3, torch.tensor([0, 0, 2]), torch.tensor([-1.0, -1.0, 0.0]),
                                    torch.tensor([1, 0, 3]), fill=-1.0)
    assert best.tolist() == [-1.0, -1.0, 0.0] and owner.tolist() == [-1, -1, 3]
