"""PNG plots of a run's per-epoch rows: losses, evaluation metrics, assignment statistics, LR."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from detkit.viz import plot_curves

__all__ = ["plot_training"]

_EVAL_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _series(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    for k in keys:
        pts = [(float(r["epoch"]), float(r[k])) for r in rows if isinstance(r.get(k), (int, float))]
        if pts:
            out[k] = pts
    return out


def plot_training(rows: Sequence[dict[str, Any]], out_dir: str | os.PathLike) -> list[Path]:
    """Write ``losses.png`` (``loss*`` keys and ``lr``), ``metrics.png`` (AP keys) and
    ``assignment.png`` (``stat_*`` keys) from per-epoch rows; returns the files written."""
    out_dir = Path(out_dir)
    keys = sorted({k for r in rows for k in r})
    groups = {
        "losses.png": [k for k in keys if k.startswith("loss")] + [k for k in keys if k == "lr"],
        "metrics.png": [k for k in _EVAL_KEYS if k in keys],
        "assignment.png": [k for k in keys if k.startswith("stat_")],
    }
    written = []
    for name, group in groups.items():
        series = _series(rows, group)
        if series:
            plot_curves(series, out_dir / name, xlabel="epoch", title=name[:-4])
            written.append(out_dir / name)
    return written
