"""GT chunking helpers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from detkit.anchors import YOLOAnchorGenerator
from detkit.assigners import MaxIoUAssigner, chunking, gt_chunk_for_memory
from detkit.assigners.chunking import gt_chunks, merge_best, scatter_best

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


@pytest.mark.parametrize("name", sorted(helpers.FACTORIES))
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
