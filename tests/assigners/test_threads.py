"""Intra-op threads of assignment (issue 29): the scoped thread count, the limit every rule's ``assign`` runs
under, and results that do not depend on the count."""

from __future__ import annotations

import pytest
import torch

from detkit.anchors import PointGenerator
from detkit.assigners import ATSSAssigner, MinPositives
from detkit.assigners.presets import ASSIGNER_PRESETS, build_preset
from detkit.assigners.threads import (
    ASSIGN_THREADS,
    assignment_threads,
    current_assign_threads,
    intra_op_threads,
    limit_assign_threads,
)


@pytest.fixture
def two_threads():
    """torch on 2 intra-op threads for the test, the count before restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_intra_op_threads_lowers_and_restores(two_threads):
    with intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


def test_intra_op_threads_restores_on_exception(two_threads):
    with pytest.raises(KeyError), intra_op_threads(1):
        assert torch.get_num_threads() == 1
        raise KeyError("boom")
    assert torch.get_num_threads() == 2


def test_intra_op_threads_never_raises_the_count(two_threads):
    with intra_op_threads(8):
        assert torch.get_num_threads() == 2
    with intra_op_threads(None):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "1"])
def test_thread_counts_must_be_positive_ints(bad):
    with pytest.raises(ValueError, match="positive int"), intra_op_threads(bad):
        pass
    with pytest.raises(ValueError, match="positive int"), assignment_threads(bad):
        pass


def test_assignment_threads_scopes_the_limit():
    assert current_assign_threads() == ASSIGN_THREADS == 1
    with assignment_threads(None):
        assert current_assign_threads() is None
        with assignment_threads(3):
            assert current_assign_threads() == 3
        assert current_assign_threads() is None
    assert current_assign_threads() == 1
    with pytest.raises(RuntimeError), assignment_threads(4):
        raise RuntimeError
    assert current_assign_threads() == 1


def test_decorator_runs_under_the_limit_and_restores(two_threads):
    seen = []

    @limit_assign_threads
    def assign(fail: bool) -> int:
        """Docstring kept."""
        seen.append(torch.get_num_threads())
        if fail:
            raise ValueError("bad input")
        return 7

    assert assign(False) == 7 and assign.__doc__ == "Docstring kept."
    with pytest.raises(ValueError, match="bad input"):
        assign(True)
    with assignment_threads(None):
        assign(False)
    assert seen == [1, 1, 2]
    assert torch.get_num_threads() == 2


def _scene(num_gts: int = 60, batch: int = 2, size: int = 320, classes: int = 80, seed: int = 0) -> dict:
    """A point grid (2,100 priors at 320 px) with dense GTs and predictions near the priors; big enough that
    torch splits the assignment's larger ops (predictions: 336,000 scores) over 2 threads."""
    g = torch.Generator().manual_seed(seed)
    grid = PointGenerator([8, 16, 32], scale=5.0).grid_priors([(size // s,) * 2 for s in (8, 16, 32)])
    n = grid.num_priors
    wh = torch.exp(torch.empty(batch, num_gts, 2).uniform_(2.0, 4.5, generator=g))
    xy = torch.rand(batch, num_gts, 2, generator=g) * (size - wh)
    centres = grid.centres
    jitter = torch.randn(batch, n, 2, generator=g) * grid.strides[:, None] * 0.5
    pwh = grid.strides[:, None] * 4 * torch.exp(torch.randn(batch, n, 2, generator=g) * 0.5)
    mask = torch.ones(batch, num_gts, dtype=torch.bool)
    mask[1, num_gts - 7:] = False
    return dict(grid=grid, gt_boxes=torch.cat([xy, xy + wh], -1) * mask[..., None],
                gt_labels=torch.randint(0, classes, (batch, num_gts), generator=g), gt_mask=mask,
                pred_boxes=torch.cat([centres + jitter - pwh / 2, centres + jitter + pwh / 2], -1),
                pred_scores=torch.rand(batch, n, classes, generator=g) ** 6)


def _assign(assigner, x: dict):
    return assigner.assign(x["grid"], x["gt_boxes"], x["gt_labels"], x["gt_mask"], pred_boxes=x["pred_boxes"],
                           pred_scores=x["pred_scores"])


def _fields(result) -> dict:
    return {k: v for k, v in vars(result).items() if isinstance(v, torch.Tensor)}


@pytest.mark.parametrize("preset", sorted(ASSIGNER_PRESETS))
def test_results_bit_identical_on_1_and_2_threads(preset, two_threads):
    x = _scene()
    assigner = build_preset(preset)
    limited = _fields(_assign(assigner, x))  # the default: 1 thread inside assign
    with assignment_threads(None):
        pooled = _fields(_assign(assigner, x))  # every op on the caller's 2 threads
    assert torch.get_num_threads() == 2
    assert limited.keys() == pooled.keys()
    assert int(limited["pos_mask"].sum()) > 0
    for key in limited:
        assert torch.equal(limited[key], pooled[key]), f"{preset}: {key} differs between 1 and 2 threads"


def test_rules_and_wrappers_assign_on_one_thread(two_threads, monkeypatch):
    """What runs inside assign sees 1 thread; MinPositives around a rule nests without raising the count;
    assignment_threads(2) gives the rule 2."""
    seen: list[int] = []
    positives = ATSSAssigner._positives

    def probe(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return positives(self, *args, **kwargs)

    monkeypatch.setattr(ATSSAssigner, "_positives", probe)
    x = _scene(num_gts=8)
    _assign(ATSSAssigner(topk=9), x)
    _assign(MinPositives(ATSSAssigner(topk=9)), x)
    assert seen and set(seen) == {1}
    seen.clear()
    with assignment_threads(2):
        _assign(ATSSAssigner(topk=9), x)
    assert seen and set(seen) == {2}
    assert torch.get_num_threads() == 2
