"""What the parity scripts (``benchmarks/parity_*.py``) share: the checkout on ``sys.path``, the relative
difference they hold to a tolerance, and their Markdown result tables.

Importing this module puts the repository root (``detkit`` without an install) and ``benchmarks/`` (the
helpers beside it) first on ``sys.path``, so a script imports it before ``detkit`` and its sibling scripts::

    from parity_common import ROOT, Result, limit_threads, table_header

A script collects its rows and notes in a :class:`Result` (``Result.term`` for a compared value,
``Result.gradients`` for a model's gradients) and prints them with :meth:`Result.report`, whose return value is
its exit status (0 when every check passed, 1 otherwise; 2 is left to a missing peer).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Protocol

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without install
sys.path.insert(0, str(ROOT / "benchmarks"))  # the helpers beside this file

__all__ = ["ROOT", "Result", "import_peer", "limit_threads", "relative", "table_header", "table_row", "verdict"]


def relative(a: float, b: float) -> float:
    """``|a - b| / max(|b|, 1e-12)`` (0 when both are 0)."""
    return abs(a - b) / max(abs(b), 1e-12)


def verdict(passed: bool, check: bool = True) -> str:
    """The last column of a row: ``ok`` / ``FAIL``, or ``measured`` for a value shown but not held to a bound."""
    return ("ok" if passed else "FAIL") if check else "measured"


def table_row(*cells: str) -> str:
    """``| a | b | |``: one Markdown table row (an empty cell is ``| |``)."""
    return "|" + "".join(f" {c} |" if c else " |" for c in cells)


def table_header(*columns: str, right: Iterable[int] = ()) -> str:
    """A Markdown table's header and separator lines; ``right``: the (0-based) columns aligned right (numbers)."""
    right = set(right)
    return table_row(*columns) + "\n|" + "".join("---:|" if i in right else "---|" for i in range(len(columns)))


def import_peer(name: str, setup: str = "`make bench-setup`") -> ModuleType | None:
    """The peer's package ``name`` (``ultralytics``, ``yolox``, ``yolov5``), or None after one printed line
    saying how to get it (``setup``: the make target that installs it); the script then exits with status 2."""
    try:
        return importlib.import_module(name)
    except ImportError:
        print(f"{name} is not installed: run {setup} and use .venv-bench/bin/python")
        return None


def limit_threads(threads: int = 2) -> None:
    """At most ``threads`` torch threads (the parity checks compare values, not speed: a shared machine stays
    usable)."""
    torch.set_num_threads(min(threads, torch.get_num_threads()))


class _Gradients(Protocol):
    norm_rel: float
    norm_name: str


@dataclass
class Result:
    """Printed rows and notes of a parity check, and whether every check passed."""

    rows: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ok: bool = True

    def term(self, label: str, term: str, ref: float, got: float, tol: float, check: bool = True) -> bool:
        """A row ``| label | term | ref | got | relative difference | verdict |`` for a value compared with the
        peer's (``got`` held to ``tol`` relative to ``ref`` when ``check``); returns whether it is within."""
        rel = relative(got, ref)
        passed = rel <= tol
        self.ok &= passed or not check
        self.rows.append(table_row(label, term, f"{ref:.6f}", f"{got:.6f}", f"{rel:.1e}", verdict(passed, check)))
        return passed

    def gradients(self, label: str, count: int, grads: _Gradients, names: Mapping[str, str], passed: bool,
                  check: bool = True) -> None:
        """A row for ``count`` parameters' gradients: the worst norm-relative difference, its parameter (detkit's
        name and the peer's, through ``names``) and the verdict ``passed`` the caller decided."""
        self.ok &= passed or not check
        peer = names[grads.norm_name] if grads.norm_name else "-"
        self.rows.append(table_row(label, f"gradients of {count} parameters, worst norm-relative: {grads.norm_name} "
                                          f"({peer})", "", "", f"{grads.norm_rel:.1e}", verdict(passed, check)))

    def report(self, flush: bool = False) -> int:
        """Print the rows, a blank line and the notes; the exit status (0: every check passed, else 1)."""
        for row in self.rows:
            print(row, flush=flush)
        print()
        for note in self.notes:
            print(note)
        return 0 if self.ok else 1
