"""benchmarks/parity_common.py: the rows, verdicts and exit status every parity script prints (exact strings)."""

import importlib
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def common(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # its sys.path entries go when the test ends
    spec = importlib.util.spec_from_file_location("parity_common", ROOT / "benchmarks" / "parity_common.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "parity_common", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_header_and_rows(common):
    assert common.table_header("model", "term", "peer", "detkit", "relative difference", "", right=(2, 3, 4)) == (
        "| model | term | peer | detkit | relative difference | |\n|---|---|---:|---:|---:|---|")
    assert common.table_row("a", "", "b") == "| a | | b |"
    assert sys.path[:2] == [str(ROOT / "benchmarks"), str(ROOT)]  # sibling scripts first, then the checkout


def test_relative_and_verdict(common):
    assert common.relative(1.5, 1.0) == 0.5 and common.relative(0.0, 0.0) == 0.0
    assert common.relative(1e-12, 0.0) == 1.0  # the 1e-12 floor
    assert [common.verdict(True), common.verdict(False), common.verdict(False, check=False)] == [
        "ok", "FAIL", "measured"]


def test_result_rows_and_exit_status(common, capsys):
    res = common.Result()
    assert res.term("m", "box", 2.0, 2.0001, tol=1e-4)
    assert res.ok
    assert not res.term("m", "cls", 2.0, 3.0, tol=1e-4, check=False)  # measured: shown, does not fail
    assert res.ok
    grads = SimpleNamespace(norm_rel=2e-4, norm_name="head.w")
    res.gradients("m", 7, grads, {"head.w": "model.22.w"}, passed=False)
    assert not res.ok
    res.notes.append("a note")
    assert res.rows == [
        "| m | box | 2.000000 | 2.000100 | 5.0e-05 | ok |",
        "| m | cls | 2.000000 | 3.000000 | 5.0e-01 | measured |",
        "| m | gradients of 7 parameters, worst norm-relative: head.w (model.22.w) | | | 2.0e-04 | FAIL |",
    ]
    assert res.report() == 1
    assert capsys.readouterr().out == "\n".join(res.rows) + "\n\na note\n"
    assert common.Result().report() == 0


def test_import_peer_gives_the_module_or_one_line_and_none(common, capsys):
    assert common.import_peer("json") is importlib.import_module("json")
    assert capsys.readouterr().out == ""
    assert common.import_peer("no_such_peer_pkg") is None
    assert capsys.readouterr().out == (
        "no_such_peer_pkg is not installed: run `make bench-setup` and use .venv-bench/bin/python\n")
    assert common.import_peer("no_such_peer_pkg", "`make parity` (it installs the peers)") is None
    assert capsys.readouterr().out == ("no_such_peer_pkg is not installed: run `make parity` (it installs the peers) "
                                       "and use .venv-bench/bin/python\n")
