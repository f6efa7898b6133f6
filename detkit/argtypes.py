"""argparse ``type=`` functions for the tools' numeric flags: a value out of range is a usage error.

    p.add_argument("--score-thr", type=fraction, default=0.3)
    # tools/infer.py ... --score-thr 2
    # infer.py: error: argument --score-thr: must be a number in [0, 1], got '2'     (exit status 2)

Every float type refuses ``nan`` and ``inf`` (which ``float()`` accepts): a comparison with NaN is
always false, so ``--score-thr nan`` would otherwise keep no detection without a word.
"""

from __future__ import annotations

import argparse
import math

__all__ = ["finite_float", "fraction", "nonnegative_float", "nonnegative_int", "positive_float", "positive_int"]


def _number(text: str, kind: type, what: str) -> float | int:
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be {what} (finite), got {text!r}")
    return value


def _ranged(text: str, kind: type, what: str, ok) -> float | int:
    value = _number(text, kind, what)
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def finite_float(text: str) -> float:
    """A finite float (``nan``, ``inf`` refused)."""
    return float(_number(text, float, "a finite number"))


def fraction(text: str) -> float:
    """A float in [0, 1] (score and IoU thresholds)."""
    return float(_ranged(text, float, "a number in [0, 1]", lambda v: 0.0 <= v <= 1.0))


def positive_float(text: str) -> float:
    """A finite float > 0 (sizes)."""
    return float(_ranged(text, float, "a number > 0", lambda v: v > 0))


def nonnegative_float(text: str) -> float:
    """A finite float >= 0 (tolerances, minimum sizes)."""
    return float(_ranged(text, float, "a number >= 0", lambda v: v >= 0))


def positive_int(text: str) -> int:
    """An int >= 1 (counts, batch sizes, image sides)."""
    return int(_ranged(text, int, "an integer >= 1", lambda v: v >= 1))


def nonnegative_int(text: str) -> int:
    """An int >= 0 (seeds, counts where none is allowed)."""
    return int(_ranged(text, int, "an integer >= 0", lambda v: v >= 0))
