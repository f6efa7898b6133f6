"""Run logging: a text log, metrics as JSONL + CSV, TensorBoard events when installed.

Only rank 0 writes; other ranks get writers that do nothing, so callers need no rank checks.
Files in the work dir: ``train.log`` (text), ``metrics.jsonl`` (one object per logged step, with
``kind`` = ``"train"`` / ``"epoch"`` / ``"val"``), ``metrics.csv`` (one row per epoch: epoch means
of losses and ``stat_*`` assignment statistics, LR, evaluation metrics), ``tb/`` (TensorBoard).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["MetricsWriter", "setup_logger"]

LOGGER_NAME = "detkit"


class _TqdmHandler(logging.StreamHandler):
    """Writes through tqdm so log lines do not break progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def setup_logger(work_dir: str | os.PathLike | None = None, rank: int = 0, level: int = logging.INFO) -> logging.Logger:
    """The ``detkit`` logger: console on rank 0 (warnings only elsewhere), plus ``train.log`` in
    ``work_dir`` on rank 0. Calling it again replaces the handlers (one set per run)."""
    logger = logging.getLogger(LOGGER_NAME)
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    logger.setLevel(level if rank == 0 else logging.WARNING)
    logger.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    console = _TqdmHandler()
    console.setFormatter(fmt)
    logger.addHandler(console)
    if work_dir is not None and rank == 0:
        os.makedirs(work_dir, exist_ok=True)
        fh = logging.FileHandler(Path(work_dir) / "train.log", encoding="utf-8")
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    return logger


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf
    return value


class MetricsWriter:
    """Appends metrics to ``metrics.jsonl``, keeps ``metrics.csv`` (per epoch) and TensorBoard.

    Args:
        work_dir: where the files go.
        enabled: False on ranks other than 0 (every method then does nothing).
        tensorboard: write TensorBoard events when the package is installed.

    ``self.epochs`` keeps the per-epoch rows (dicts) for :mod:`detkit.engine.plots`.
    """

    def __init__(self, work_dir: str | os.PathLike, enabled: bool = True, tensorboard: bool = True) -> None:
        self.work_dir = Path(work_dir)
        self.enabled = enabled
        self.epochs: list[dict[str, Any]] = []
        self._tb = None
        if not enabled:
            return
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.work_dir / "tb"))
            except ImportError:
                logging.getLogger(LOGGER_NAME).info("tensorboard not installed: no TensorBoard events")

    def load_history(self) -> None:
        """Re-read earlier per-epoch rows from ``metrics.jsonl`` (when resuming a run)."""
        path = self.work_dir / "metrics.jsonl"
        if not self.enabled or not path.is_file():
            return
        rows = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if rec.get("kind") == "epoch":
                rows[rec["epoch"]] = rec
        self.epochs = [rows[k] for k in sorted(rows)]

    def log(self, kind: str, step: int, values: Mapping[str, Any]) -> None:
        """One JSONL record ``{"kind", "step", **values}`` and TensorBoard scalars ``kind/name``."""
        if not self.enabled:
            return
        rec = {"kind": kind, "step": step, **{k: _plain(v) for k, v in values.items()}}
        with open(self.work_dir / "metrics.jsonl", "a", encoding="utf-8") as f:  # whole lines survive a kill
            f.write(json.dumps(rec) + "\n")
        if self._tb is not None:
            for k, v in rec.items():
                if k not in ("kind", "step") and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)

    def log_epoch(self, epoch: int, values: Mapping[str, Any]) -> None:
        """Record an epoch row (JSONL + TensorBoard) and rewrite ``metrics.csv`` with all rows."""
        if not self.enabled:
            return
        row = {"epoch": epoch, **{k: _plain(v) for k, v in values.items()}}
        self.epochs = [r for r in self.epochs if r.get("epoch") != epoch] + [row]
        self.log("epoch", epoch, row)
        columns: list[str] = []
        for r in self.epochs:
            columns += [k for k in r if k not in columns and k not in ("kind", "step")]
        tmp = self.work_dir / ".metrics.csv.tmp"
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            for r in self.epochs:
                writer.writerow({k: r.get(k, "") for k in columns})
        os.replace(tmp, self.work_dir / "metrics.csv")

    def close(self) -> None:
        """Flush and close TensorBoard (JSONL/CSV need no closing; logging afterwards still works)."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
