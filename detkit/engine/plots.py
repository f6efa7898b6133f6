"""PNG plots of a run: loss curves per iteration, evaluation metrics, assignment statistics.

- ``losses.png``: each ``loss*`` value and the LR against the iteration (the logged values and a
  smoothed line), epoch ends marked by dotted lines and an epoch axis on top. Without training
  records (an old run), the per-epoch means against the epoch.
- ``metrics.png``: AP, AP50, AP75, APs, APm, APl against the epoch in one panel; with a single
  evaluation (a short run evaluated once), a table of the final numbers instead of plots of one point.
- ``assignment.png``: the ``stat_*`` assignment statistics against the epoch (a table after one epoch).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_training"]

EVAL_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
SMOOTH_POINTS = 25  # the smoothed curve averages about 1/25 of the logged points around each one
MAX_EPOCH_LINES = 40  # more epochs than this: only the epoch axis on top, no dotted lines


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _numbers(rows: Sequence[dict[str, Any]], x: str, key: str) -> tuple[list[float], list[float]]:
    pts = [(float(r[x]), float(r[key])) for r in rows
           if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
    return [p[0] for p in pts], [p[1] for p in pts]


def _smooth(values: Sequence[float]) -> list[float]:
    """A centred moving average (no lag), its window shrinking at both ends."""
    half = len(values) // (2 * SMOOTH_POINTS)
    out = []
    for i in range(len(values)):
        window = values[max(0, i - half):i + half + 1]
        out.append(sum(window) / len(window))
    return out


def epoch_ends(iterations: Sequence[dict[str, Any]]) -> list[int]:
    """The last logged step of each epoch (the trainer always logs an epoch's last iteration, so
    these are the exact iteration counts at the epoch ends)."""
    ends: dict[int, int] = {}
    for r in iterations:
        if "epoch" in r:
            ends[int(r["epoch"])] = max(ends.get(int(r["epoch"]), 0), int(r["step"]))
    return [ends[e] for e in sorted(ends)]


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    os.makedirs(path.parent, exist_ok=True)
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def _grid(n: int, width: float = 4.0, height: float = 3.0) -> tuple[Any, list[Any]]:
    plt = _pyplot()
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.axis("off")
    return fig, flat[:n]


def plot_table(values: dict[str, float], path: Path, title: str) -> Path:
    """A small figure holding a two-column table (name, value) instead of plots of single points."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 0.9 + 0.32 * len(values)))
    ax.axis("off")
    cells = [[k, f"{v:.4f}" if abs(v) < 1000 else f"{v:.4g}"] for k, v in values.items()]
    table = ax.table(cellText=cells, colLabels=["", "value"], loc="center", cellLoc="left", colLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(10)
    table.scale(1.0, 1.3)
    ax.set_title(title, fontsize=11)
    return _save(fig, path)


def _mark_epochs(ax: Any, ends: Sequence[int]) -> None:
    if len(ends) <= MAX_EPOCH_LINES:
        for step in ends[:-1]:
            ax.axvline(step, color="0.6", linestyle=":", linewidth=0.8)
    per_epoch = ends[0] if ends else 0
    if per_epoch > 0 and all(e % per_epoch == 0 for e in ends):  # equal epochs: an epoch axis on top
        from matplotlib.ticker import MaxNLocator

        top = ax.secondary_xaxis("top", functions=(lambda s: s / per_epoch, lambda e: e * per_epoch))
        top.xaxis.set_major_locator(MaxNLocator(integer=True))
        top.set_xlabel("epoch", fontsize=8)
        top.tick_params(labelsize=7)


def plot_losses(iterations: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """``loss*`` values and the LR against the iteration, epoch ends marked; None without data."""
    keys = sorted({k for r in iterations for k in r if k.startswith("loss")})
    keys += ["lr"] if any("lr" in r for r in iterations) else []
    series = {k: _numbers(iterations, "step", k) for k in keys}
    series = {k: v for k, v in series.items() if len(v[0]) > 1}
    if not series:
        return None
    ends = epoch_ends(iterations)
    fig, axes = _grid(len(series))
    for ax, (name, (xs, ys)) in zip(axes, series.items()):
        if name == "lr":
            ax.plot(xs, ys, color="tab:green")
        else:
            ax.plot(xs, ys, color="tab:blue", alpha=0.3, linewidth=0.8, label="logged")
            ax.plot(xs, _smooth(ys), color="tab:blue", label="smoothed")
        _mark_epochs(ax, ends)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_per_epoch(rows: Sequence[dict[str, Any]], keys: Sequence[str], path: Path, title: str,
                   one_panel: bool = False) -> Path | None:
    """``keys`` against the epoch (one panel, or one per key); a table when there is one epoch."""
    series = {k: _numbers(rows, "epoch", k) for k in keys}
    series = {k: v for k, v in series.items() if v[0]}
    if not series:
        return None
    if all(len(xs) == 1 for xs, _ in series.values()):
        epoch = int(next(iter(series.values()))[0][0])
        return plot_table({k: ys[0] for k, (_, ys) in series.items()}, path, f"{title} after epoch {epoch}")
    if one_panel:
        fig, axes = _grid(1, width=6.0, height=4.0)
        for name, (xs, ys) in series.items():
            axes[0].plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=name)
        axes[0].legend(fontsize=8)
        axes[0].set_title(title)
        axes[0].set_xlabel("epoch")
        axes[0].grid(alpha=0.3)
        return _save(fig, path)
    fig, axes = _grid(len(series))
    for ax, (name, (xs, ys)) in zip(axes, series.items()):
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def plot_training(epochs: Sequence[dict[str, Any]], out_dir: str | os.PathLike,
                  iterations: Sequence[dict[str, Any]] = ()) -> list[Path]:
    """Write ``losses.png``, ``metrics.png`` and ``assignment.png`` (see the module docstring) from
    the per-epoch rows and the per-iteration training records; returns the files written."""
    out_dir = Path(out_dir)
    keys = sorted({k for r in epochs for k in r})
    written = [plot_losses(iterations, out_dir / "losses.png")]
    if written[0] is None:  # no training records: the epoch means
        loss_keys = [k for k in keys if k.startswith("loss")] + [k for k in keys if k == "lr"]
        written = [plot_per_epoch(epochs, loss_keys, out_dir / "losses.png", "losses")]
    written.append(plot_per_epoch(epochs, [k for k in EVAL_KEYS if k in keys], out_dir / "metrics.png",
                                  "COCO box AP", one_panel=True))
    written.append(plot_per_epoch(epochs, [k for k in keys if k.startswith("stat_")],
                                  out_dir / "assignment.png", "assignment statistics"))
    return [p for p in written if p is not None]
