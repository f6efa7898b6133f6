"""GT chunking helpers."""

from __future__ import annotations

import pytest
import torch

from detkit.assigners import MaxIoUAssigner, gt_chunk_for_memory
from detkit.assigners.chunking import gt_chunks, merge_best, scatter_best


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
