"""Memory: candidate tables chunked by a pair budget, the per-prior running best that makes chunks invisible,
and (deprecated, until every rule is on candidate tables) GT chunking."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from detkit.anchors import YOLOAnchorGenerator
from detkit.assigners import MaxIoUAssigner, chunking
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
from detkit.assigners.chunking import gt_chunk_for_memory, gt_chunks, merge_best, scatter_best

_spec = importlib.util.spec_from_file_location("assigner_conftest", Path(__file__).with_name("conftest.py"))
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


def test_gt_chunks():
    assert gt_chunks(5, None) == [slice(0, 5)]
    assert gt_chunks(5, 2) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert gt_chunks(5, 9) == [slice(0, 5)]
    assert gt_chunks(0, 2) == []


def test_chunk_for_memory():
    # 16 x 25200 priors x 64 B = 25.8 MB per GT -> 512 MiB holds 20 GTs.
    assert gt_chunk_for_memory(16, 25200, 512) == 20
    assert gt_chunk_for_memory(16, 25200, 1) == 1
    with pytest.raises(ValueError, match="limit_mb"):
        gt_chunk_for_memory(1, 1, 0)


def test_merge_best_keeps_the_earlier_gt_on_ties():
    value, index = merge_best(torch.tensor([[0.5, 0.2]]), torch.tensor([[0, 1]]),
                              torch.tensor([[0.5, 0.3]]), torch.tensor([[3, 4]]))
    assert torch.equal(value, torch.tensor([[0.5, 0.3]])) and index.tolist() == [[0, 4]]


def test_scatter_best_lowest_gt_on_equal_values():
    prior = torch.tensor([[[0, 1], [1, 2]]])  # GT0 -> priors 0, 1; GT1 -> priors 1, 2
    value = torch.tensor([[[0.4, 0.7], [0.7, -1.0]]])  # prior 1: 0.7 for both GTs; GT1-prior 2 left out
    best, gt = scatter_best(4, prior, value, gt_offset=10, fill=-1.0)
    assert best.tolist() == [[pytest.approx(0.4), pytest.approx(0.7), -1.0, -1.0]]
    assert gt.tolist() == [[10, 10, -1, -1]]


@pytest.mark.parametrize("chunk", [0, -1, 1.5])
def test_bad_chunk_size(chunk):
    with pytest.raises(ValueError, match="max_gt_chunk"):
        MaxIoUAssigner(0.5, 0.4, max_gt_chunk=chunk)


def test_auto_chunk_from_a_cuda_devices_free_memory(monkeypatch):
    # "auto" asks chunking.free_memory_mb (torch.cuda.mem_get_info on CUDA, None elsewhere); a quarter
    # of it bounds a chunk's dense working set of batch x priors x 64 bytes per GT.
    seen = []

    def free(device):
        seen.append(device.type)
        return 2048.0 if device.type == "cuda" else None

    monkeypatch.setattr(chunking, "free_memory_mb", free)
    assert chunking.auto_chunk(16, 25200, torch.device("cuda")) == 20  # 512 MiB / 25.8 MB per GT
    assert chunking.auto_chunk(16, 25200, torch.device("cpu")) is None  # no automatic chunking on CPU
    assert gt_chunks(45, "auto", batch=16, num_priors=25200, device="cuda") == [slice(0, 20), slice(20, 40),
                                                                                slice(40, 45)]
    assert gt_chunks(45, "auto", batch=16, num_priors=25200, device="cpu") == [slice(0, 45)]
    assert seen == ["cuda", "cpu", "cuda", "cpu"]
    monkeypatch.setattr(chunking, "free_memory_mb", lambda device: 0.001)  # nearly full: one GT at a time
    assert gt_chunks(3, "auto", batch=16, num_priors=25200, device="cuda") == [slice(0, 1), slice(1, 2), slice(2, 3)]


def test_free_memory_is_only_read_on_cuda():
    assert chunking.free_memory_mb(torch.device("cpu")) is None


LEGACY = sorted(n for n in helpers.FACTORIES if hasattr(helpers.FACTORIES[n](), "max_gt_chunk"))


@pytest.mark.parametrize("name", LEGACY)
def test_auto_is_the_default_and_chunks_like_an_explicit_size(name, monkeypatch):
    # Every assigner defaults to "auto"; a budget that fits one GT gives the unchunked result.
    assigner = helpers.FACTORIES[name]()
    assert assigner.max_gt_chunk == "auto"
    grid = YOLOAnchorGenerator(base_sizes=helpers.ANCHORS, strides=[8, 16, 32]).grid_priors([(8, 8), (4, 4), (2, 2)])
    data = helpers.random_batch(3, pad_from=4)
    whole = helpers.run(helpers.FACTORIES[name](max_gt_chunk=None), grid, data)
    calls = []
    monkeypatch.setattr(chunking, "auto_chunk", lambda b, n, device: calls.append(device.type) or 1)
    helpers.assert_same(helpers.run(assigner, grid, data), whole)
    assert calls  # the automatic choice was asked for


def test_bad_auto_spelling():
    with pytest.raises(ValueError, match="'auto'"):
        MaxIoUAssigner(0.5, 0.4, max_gt_chunk="Auto")


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
