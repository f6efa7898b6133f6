"""Text reports of COCO metrics: the standard 12-line summary and a per-class AP table."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["SUMMARY_KEYS", "format_per_class_table", "format_summary"]

# Names of COCOeval.stats[0:12], in order.
SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")

# (is AP, IoU range, area, max detections) of each summary line, as pycocotools prints them.
_LINES = (
    (True, "0.50:0.95", "all", 100), (True, "0.50", "all", 100), (True, "0.75", "all", 100),
    (True, "0.50:0.95", "small", 100), (True, "0.50:0.95", "medium", 100), (True, "0.50:0.95", "large", 100),
    (False, "0.50:0.95", "all", 1), (False, "0.50:0.95", "all", 10), (False, "0.50:0.95", "all", 100),
    (False, "0.50:0.95", "small", 100), (False, "0.50:0.95", "medium", 100), (False, "0.50:0.95", "large", 100),
)


def format_summary(stats: Sequence[float] | np.ndarray) -> str:
    """The 12 COCO summary numbers as the 12 lines pycocotools' ``summarize()`` prints."""
    lines = []
    for (is_ap, iou, area, max_dets), value in zip(_LINES, stats):
        title, kind = ("Average Precision", "(AP)") if is_ap else ("Average Recall", "(AR)")
        lines.append(f" {title:<18} {kind} @[ IoU={iou:<9} | area={area:>6s} | maxDets={max_dets:>3d} ] "
                     f"= {value:0.3f}")
    return "\n".join(lines)


def format_per_class_table(names: Sequence[str], aps: Sequence[float | None], columns: int = 3) -> str:
    """Per-class AP in ``columns`` side-by-side (class, AP) pairs; ``None`` (no GT) prints ``-``.

    Example (columns=2)::

        | class  | AP    | class | AP    |
        |--------|-------|-------|-------|
        | person | 0.512 | bike  | -     |
    """
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    cells = [(str(n), "-" if ap is None else f"{ap:.3f}") for n, ap in zip(names, aps)]
    if not cells:
        return "(no classes)"
    width = max(5, max(len(n) for n, _ in cells))
    rows = [cells[i : i + columns] for i in range(0, len(cells), columns)]
    rows[-1] = rows[-1] + [("", "")] * (columns - len(rows[-1]))
    header = "|" + "|".join(f" {'class':<{width}} | {'AP':<5} " for _ in range(columns)) + "|"
    rule = "|" + "|".join(f"-{'-' * width}-|-------" for _ in range(columns)) + "|"
    body = ["|" + "|".join(f" {n:<{width}} | {a:<5} " for n, a in row) + "|" for row in rows]
    return "\n".join([header, rule, *body])
