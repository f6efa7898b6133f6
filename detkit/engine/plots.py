"""PNG plots of a run: loss curves per iteration, evaluation metrics, assignment statistics.

- ``losses.png``: each ``loss*`` value and the LR against the iteration (the logged values and a
  smoothed line), epoch ends marked by dotted lines and an epoch axis on top. Without training
  records (an old run), the per-epoch means against the epoch.
- ``metrics.png``: AP, AP50, AP75, APs, APm, APl against the epoch in one panel; with a single
  evaluation (a short run evaluated once), a table of the final numbers instead of plots of one point.
- ``assignment.png``: the ``stat_*`` assignment statistics against the epoch (a table after one epoch).
- ``results.png`` (:func:`plot_results`): each training loss per epoch with its validation loss
  (``val/loss*``) on the same panel, then AP50 and AP.
- ``labels.png`` (:func:`plot_labels`): the training labels: boxes per class, boxes per image, box
  centres and box widths / heights (in image fractions).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detkit.io import atomic_save_figure

__all__ = ["plot_labels", "plot_results", "plot_training"]

EVAL_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
SMOOTH_POINTS = 25  # the smoothed curve averages about 1/25 of the logged points around each one
MAX_EPOCH_LINES = 40  # more epochs than this: only the epoch axis on top, no dotted lines
VAL_PREFIX = "val/"  # validation losses in metrics.csv: val/loss, val/loss_box, ...
RESULT_METRICS = ("AP50", "AP")
MAX_LABEL_CLASSES = 80  # labels.png names at most this many classes (most boxes first)
MAX_SCATTER_POINTS = 20000  # labels.png draws a fixed sample of this many boxes at most


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
    try:
        atomic_save_figure(fig, path, dpi=100)  # a full disk: OutputWriteError, the previous figure kept
    finally:
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


def plot_results(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path | None:
    """``results.png``: per epoch, each training ``loss*`` with its ``val/loss*`` beside it in one
    panel, then :data:`RESULT_METRICS`; None when the rows hold none of them.

    Args:
        rows: per-epoch rows (``metrics.csv``): ``epoch`` and numbers (empty strings are skipped).
    """
    keys = {k for r in rows for k in r}
    losses = sorted(k for k in keys if k.startswith("loss"))
    losses += sorted(k[len(VAL_PREFIX):] for k in keys if k.startswith(VAL_PREFIX + "loss")
                     and k[len(VAL_PREFIX):] not in losses)
    panels = [(k, [("train", k), ("val", VAL_PREFIX + k)]) for k in losses]
    panels += [(k, [(k, k)]) for k in RESULT_METRICS if k in keys]
    series = [(title, [(label, *_numbers(rows, "epoch", key)) for label, key in lines]) for title, lines in panels]
    series = [(title, [line for line in lines if line[1]]) for title, lines in series]
    series = [(title, lines) for title, lines in series if lines]
    if not series:
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    cols = min(4, len(series))
    n_rows = -(-len(series) // cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(3.6 * cols, 2.9 * n_rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[len(series):]:
        ax.axis("off")
    for ax, (title, lines) in zip(flat, series):
        for label, xs, ys in lines:
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=label)
        if len(lines) > 1 or lines[0][0] == "val":
            ax.legend(fontsize=7)
        ax.set_title(title, fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    return _save(fig, Path(path))


def plot_labels(labels: np.ndarray, boxes: np.ndarray, image_index: np.ndarray, num_images: int,
                class_names: Sequence[str], path: str | os.PathLike) -> Path:
    """``labels.png``: an overview of a dataset's boxes.

    Args:
        labels: ``(N,)`` class indices of all boxes.
        boxes: ``(N, 4)`` ``cx, cy, w, h`` as fractions of their image's width / height.
        image_index: ``(N,)`` the image each box is in (``0..num_images-1``).
        num_images: images in the dataset (those without boxes count in the per-image histogram).
        class_names: C names.

    Panels: boxes per class (at most :data:`MAX_LABEL_CLASSES` named, most boxes first beyond),
    boxes per image, box centres (a 2-D histogram) and box width against height (a fixed sample of
    at most :data:`MAX_SCATTER_POINTS` boxes, coloured by class).
    """
    plt = _pyplot()
    c = len(class_names)
    counts = np.bincount(labels.astype(np.int64), minlength=c)[:c]
    fig = plt.figure(figsize=(13, 9))
    grid = fig.add_gridspec(2, 3)
    axes = [fig.add_subplot(grid[0, :]), *(fig.add_subplot(grid[1, i]) for i in range(3))]  # counts on top
    ax = axes[0]
    order = np.arange(c) if c <= MAX_LABEL_CLASSES else np.argsort(-counts, kind="stable")[:MAX_LABEL_CLASSES]
    ax.bar(range(len(order)), counts[order], color=[_rgb(int(k)) for k in order])
    ax.set_xticks(range(len(order)), [class_names[k] for k in order], rotation=90 if len(order) > 12 else 0,
                  fontsize=9 if len(order) <= 40 else 7)
    ax.set_xlim(-0.6, len(order) - 0.4)
    more = f" ({len(order)} of {c} classes, most boxes first)" if len(order) < c else ""
    ax.set_title(f"{len(labels)} boxes in {num_images} images{more}", fontsize=10)
    ax.set_ylabel("boxes")
    ax = axes[1]
    per_image = np.bincount(image_index.astype(np.int64), minlength=num_images)
    most = int(per_image.max(initial=0))
    ax.hist(per_image, bins=np.arange(most + 2) - 0.5 if most < 50 else 50, color="tab:blue")
    ax.set_xlabel("boxes per image")
    ax.set_ylabel("images")
    ax.set_title(f"boxes per image: mean {per_image.mean() if num_images else 0:.1f},\n"
                 f"{int((per_image == 0).sum())} images without boxes", fontsize=10)
    ax = axes[2]
    ax.hist2d(boxes[:, 0], boxes[:, 1], bins=50, range=[[0, 1], [0, 1]], cmap="Blues")
    ax.set_xlim(0, 1)
    ax.set_ylim(1, 0)  # image coordinates: y down
    ax.set_aspect("equal")
    ax.set_xlabel("centre x (image fraction)")
    ax.set_ylabel("centre y")
    ax.set_title("box centres", fontsize=10)
    ax = axes[3]
    pick = np.arange(len(labels))
    if len(pick) > MAX_SCATTER_POINTS:
        pick = np.sort(np.random.default_rng(0).choice(len(pick), MAX_SCATTER_POINTS, replace=False))
    ax.scatter(boxes[pick, 2], boxes[pick, 3], s=12 if len(pick) < 2000 else 3, alpha=0.5,
               c=[_rgb(int(k)) for k in labels[pick]] if len(pick) else None)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("width (image fraction)")
    ax.set_ylabel("height")
    ax.set_title("box sizes" + (f" ({len(pick)} of {len(labels)} boxes)" if len(pick) < len(labels) else ""),
                 fontsize=10)
    for a in axes:
        a.grid(alpha=0.3)
    return _save(fig, Path(path))


def _rgb(index: int) -> tuple[float, float, float]:
    """A class's colour (viz's BGR one) as a matplotlib RGB tuple."""
    from detkit.viz import color_for

    b, g, r = color_for(index)
    return r / 255, g / 255, b / 255
