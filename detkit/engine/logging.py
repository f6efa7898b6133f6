"""Run logging: a text log, metrics as JSONL + CSV, and experiment trackers (TensorBoard, MLflow, W&B).

Only rank 0 writes; other ranks get writers that do nothing, so callers need no rank checks.
Files in the work dir: ``train.log`` (text), ``config.py`` (the merged config), ``metrics.jsonl``
(one object per logged step, with ``kind`` = ``"train"`` / ``"epoch"`` / ``"val"``),
``metrics.csv`` (one row per epoch: epoch means of losses and ``stat_*`` assignment statistics,
LR, evaluation metrics) and the PNG plots (:mod:`detkit.engine.plots`). Every record also goes to
the trackers of ``runtime.loggers`` (:mod:`detkit.engine.trackers`). :class:`TrainingLog` is what
the trainer reports through, from the start of a run to its end.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from detkit.engine.plots import plot_training
from detkit.engine.trackers import Tracker, build_trackers, finite_numbers, flatten_params
from detkit.engine.workdir import CONFIG_DUMP_MARK, config_dump_path
from detkit.io import OutputWriteError, atomic_write, atomic_write_text, write_error

if TYPE_CHECKING:
    from detkit.engine.settings import LoggingSettings
    from detkit.evaluation import COCOEvaluator

__all__ = ["PLOT_FILES", "MetricsWriter", "TrainingLog", "setup_logger"]

PLOT_FILES = ("losses.png", "metrics.png", "assignment.png", "pr_curves.png")

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


def _curve_values(record: Mapping[str, Any]) -> dict[str, Any]:
    """What the loss curves need of a training record: step, epoch, ``loss*`` and ``lr``."""
    return {k: v for k, v in record.items() if k in ("step", "epoch", "lr") or k.startswith("loss")}


class MetricsWriter:
    """Appends metrics to ``metrics.jsonl``, keeps ``metrics.csv`` (per epoch) and feeds the trackers.

    Args:
        work_dir: where the files go.
        enabled: False on ranks other than 0 (every method then does nothing).
        trackers: experiment trackers (:func:`detkit.engine.trackers.build_trackers`) that get
            every record too; closed with the writer.

    ``self.epochs`` keeps the per-epoch rows and ``self.iterations`` the per-iteration training
    records (dicts with ``step``) for :mod:`detkit.engine.plots`.
    """

    def __init__(self, work_dir: str | os.PathLike, enabled: bool = True, trackers: Sequence[Tracker] = ()) -> None:
        self.work_dir = Path(work_dir)
        self.enabled = enabled
        self.epochs: list[dict[str, Any]] = []
        self.iterations: list[dict[str, Any]] = []
        self.trackers: list[Tracker] = list(trackers) if enabled else []
        if enabled:
            self.work_dir.mkdir(parents=True, exist_ok=True)

    def attach(self, trackers: Sequence[Tracker]) -> None:
        """Send every later record to ``trackers`` too (the trainer attaches them when training starts)."""
        if self.enabled:
            self.trackers += list(trackers)

    def load_history(self) -> None:
        """Re-read earlier per-epoch rows and training records from ``metrics.jsonl`` (when resuming a run)."""
        path = self.work_dir / "metrics.jsonl"
        if not self.enabled or not path.is_file():
            return
        rows, steps = {}, {}
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if rec.get("kind") == "epoch":
                rows[rec["epoch"]] = rec
            elif rec.get("kind") == "train":
                steps[rec["step"]] = _curve_values(rec)  # a step logged twice (killed, then resumed): the later one
        self.epochs = [rows[k] for k in sorted(rows)]
        self.iterations = [steps[k] for k in sorted(steps)]

    def log_params(self, params: dict[str, str]) -> None:
        """The run's settings (flattened config), for the trackers that keep parameters."""
        for tracker in self.trackers:
            tracker.log_params(params)

    def log(self, kind: str, step: int, values: Mapping[str, Any]) -> None:
        """One JSONL record ``{"kind", "step", **values}``; the trackers get its finite numbers."""
        if not self.enabled:
            return
        rec = {"kind": kind, "step": step, **{k: _plain(v) for k, v in values.items()}}
        path = self.work_dir / "metrics.jsonl"
        try:
            with open(path, "a", encoding="utf-8") as f:  # whole lines survive a kill
                f.write(json.dumps(rec) + "\n")
        except OSError as e:  # a full disk: one line (a cut last line is skipped when read back)
            raise write_error(path, e, kept="the lines before are intact") from e
        if kind == "train":
            if self.iterations and self.iterations[-1]["step"] >= step:  # resumed before these steps
                self.iterations = [r for r in self.iterations if r["step"] < step]
            self.iterations.append(_curve_values(rec))
        numbers = finite_numbers({k: v for k, v in rec.items() if k not in ("kind", "step")})
        for tracker in self.trackers:
            tracker.log_metrics(kind, step, numbers)

    def log_epoch(self, epoch: int, values: Mapping[str, Any]) -> None:
        """Record an epoch row (JSONL + trackers) and rewrite ``metrics.csv`` with all rows."""
        if not self.enabled:
            return
        row = {"epoch": epoch, **{k: _plain(v) for k, v in values.items()}}
        self.epochs = [r for r in self.epochs if r.get("epoch") != epoch] + [row]
        self.log("epoch", epoch, row)
        columns: list[str] = []
        for r in self.epochs:
            columns += [k for k in r if k not in columns and k not in ("kind", "step")]

        def write(f: IO[str]) -> None:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            for r in self.epochs:
                writer.writerow({k: r.get(k, "") for k in columns})

        atomic_write(self.work_dir / "metrics.csv", "w", write, newline="", encoding="utf-8")

    def log_artifacts(self, paths: Sequence[str | os.PathLike]) -> None:
        """Files of the run (config dump, plots) for the trackers that store files."""
        for path in paths:
            if Path(path).is_file():
                for tracker in self.trackers:
                    tracker.log_artifact(Path(path))

    def close(self, failed: bool = False) -> None:
        """End the trackers' runs (JSONL/CSV need no closing; logging afterwards still reaches them)."""
        trackers, self.trackers = self.trackers, []
        for tracker in trackers:
            tracker.close(failed)


class TrainingLog:
    """What a training run reports (written on rank 0 only): the merged config, per-iteration
    records, per-epoch rows with their log line, plots, and the trackers' runs.

    Args:
        work_dir: the run's work dir.
        rank: this process's rank (only rank 0 writes).
        settings: ``runtime``'s logging keys (trackers, plot interval).
        epochs: the run's length (the last epoch is always plotted).
    """

    def __init__(self, work_dir: str | os.PathLike, rank: int, settings: LoggingSettings, epochs: int) -> None:
        self.work_dir = Path(work_dir)
        self.main = rank == 0
        self.settings = settings
        self.epochs = epochs
        self.writer = MetricsWriter(self.work_dir, enabled=self.main)
        self.config_file = self.work_dir / "config.py"  # where start() wrote the config dump

    def start(self, config_text: str, config: Mapping[str, Any], resumed: bool) -> None:
        """Write the config dump (``config.py``, or ``config.dump.py`` beside a user's own
        ``config.py``: :func:`~detkit.engine.workdir.config_dump_path`); start the trackers
        (continuing their runs when ``resumed``) and give them the config's keys as parameters."""
        if not self.main:
            return
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.config_file = config_dump_path(self.work_dir)
        if self.config_file.name != "config.py":
            logging.getLogger(LOGGER_NAME).info(f"{self.work_dir / 'config.py'} is not a config dump (your own "
                                                f"file, kept): the merged config goes to {self.config_file}")
        atomic_write_text(self.config_file, f"{CONFIG_DUMP_MARK}\n{config_text}")
        self.writer.attach(build_trackers(self.settings.loggers, self.work_dir, resume=resumed,
                                          run_name=self.work_dir.name))
        self.writer.log_params(flatten_params(config))

    def iteration(self, step: int, values: Mapping[str, Any]) -> None:
        """One training record (losses, LR, speed, counters) at global iteration ``step``."""
        self.writer.log("train", step, values)

    def record_epoch(self, epoch: int, row: Mapping[str, Any]) -> None:
        """The epoch's row: CSV, JSONL, trackers (before its checkpoint, so a resumed run has it)."""
        self.writer.log_epoch(epoch, row)

    def close_epoch(self, epoch: int, row: Mapping[str, Any], evaluator: COCOEvaluator | None) -> None:
        """After the epoch's checkpoint: the plots when due and the epoch's log line."""
        if not self.main:
            return
        every = self.settings.plot_interval
        if every > 0 and (epoch % every == 0 or epoch == self.epochs):
            self.plot(evaluator)
        parts = [f"{k} {v:.4f}" for k, v in row.items() if not math.isnan(v)]
        logging.getLogger(LOGGER_NAME).info(f"epoch {epoch}/{self.epochs}: " + ", ".join(parts))

    def plot(self, evaluator: COCOEvaluator | None) -> None:
        """``losses.png``, ``metrics.png``, ``assignment.png`` and the last evaluation's ``pr_curves.png``."""
        from detkit.viz import plot_pr_curves

        try:
            plot_training(self.writer.epochs, self.work_dir, self.writer.iterations)
            if evaluator is not None and evaluator.precision is not None:
                plot_pr_curves(evaluator.precision, self.work_dir / "pr_curves.png", evaluator.class_names)
        except OutputWriteError as e:  # a full disk: figures only (drawn again from metrics.jsonl), the run goes on
            logging.getLogger(LOGGER_NAME).warning(f"plots not written: {e}")

    def finish(self, failed: bool, evaluator: COCOEvaluator | None) -> None:
        """End of the run: the plots (when only drawn at the end), the files for the trackers, their
        runs ended (``failed``: stopped by an error or a signal)."""
        if self.main and not failed:
            if self.settings.plot_interval <= 0:
                self.plot(evaluator)
            self.writer.log_artifacts([self.config_file, *(self.work_dir / f for f in PLOT_FILES)])
        self.writer.close(failed)
