"""detkit.engine.compile.maybe_compile: eager when asked or when compile cannot run; one small
compiled module (``aot_eager``: TorchDynamo + AOTAutograd without a C++ build, seconds on CPU)."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from torch import nn

from detkit.engine import compile as dk_compile
from detkit.engine.compile import is_compiled, maybe_compile


@pytest.fixture
def warnings_log():
    """Messages the ``detkit`` logger emits (it may not propagate to the root logger)."""
    records: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("detkit")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.SiLU()).eval()


def test_none_mode_leaves_the_module_eager():
    m = tiny()
    assert maybe_compile(m, None) is m and maybe_compile(m, "none") is m and not is_compiled(m)
    with pytest.raises(ValueError, match="unknown compile mode 'fast'"):
        maybe_compile(m, "fast")
    with pytest.raises(ValueError, match="freeze=True needs the inductor backend"):
        maybe_compile(m, "default", backend="aot_eager", freeze=True)


def test_unavailable_compile_falls_back_with_a_warning(monkeypatch, warnings_log):
    monkeypatch.setattr(dk_compile, "compile_unavailable_reason", lambda *a, **k: "no compiler here")
    m = tiny()
    assert maybe_compile(m, "default") is m and not is_compiled(m)
    assert warnings_log == ["torch.compile unavailable (no compiler here); Sequential runs eagerly"]


def test_failing_first_call_runs_eagerly(warnings_log):
    def broken_backend(gm, example_inputs):
        raise RuntimeError("backend exploded")

    m, x = tiny(), torch.rand(2, 3, 8, 8)
    expected = m(x)
    maybe_compile(m, "default", backend=broken_backend)
    assert is_compiled(m)
    assert torch.equal(m(x), expected) and torch.equal(m(x), expected)
    assert not is_compiled(m)
    assert len(warnings_log) == 1 and "failed on its first call, running eagerly" in warnings_log[0]
    assert "backend exploded" in warnings_log[0]


def test_compiled_module_matches_eager_and_copies_run_eagerly():
    m, x = tiny(), torch.rand(2, 3, 8, 8)
    expected = m(x)
    keys = list(m.state_dict())
    maybe_compile(m, "default", backend="aot_eager")
    assert torch.allclose(m(x), expected, atol=1e-6) and is_compiled(m)
    assert list(m.state_dict()) == keys  # no _orig_mod. prefix: checkpoints load either way
    ema = copy.deepcopy(m)  # as ModelEMA does: must not run the original's compiled code
    assert not is_compiled(ema)
    with torch.no_grad():
        ema[0].weight.zero_()
    assert not torch.allclose(ema(x), expected) and torch.allclose(m(x), expected, atol=1e-6)
