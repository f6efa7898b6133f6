"""A training run's checkpoints: written by rank 0 only when the weights are sound, read back for --resume.

:class:`RunCheckpoints` wraps :class:`~detkit.engine.checkpoint.CheckpointManager` (atomic writes,
rotation, ``last_checkpoint``) with what a distributed run needs: one writer, the same answer on
every rank, a refusal (a non-finite streak, non-finite weights) logged instead of a write, and
the checkpoint ``--resume`` continues from, checked to be a whole training checkpoint of this model
and of this run's settings.

Every checkpoint carries ``meta`` (:func:`run_meta`)::

    {"class_names": [str, ...] | None, "num_classes": int | None, "img_size": int | list | None,
     "run": {"batch_size", "accumulate", "world_size", "img_size", "num_classes", "dataset_size"},
     "weights": "full" | "ema" | "model", "dtype": "float32" | "float16"}

``epoch_<E>.pth`` / ``iter_<I>.pth`` are whole training states (resumable); ``best.pth`` and
``last.pth`` are weights files (:func:`lean_state`: the EMA weights when the run has an EMA, else
the model's, plus ``meta``, ``config``, ``epoch``, ``iter``, ``best``; no optimizer, schedule,
scaler or RNG state), which ``load_weights``, ``tools/test.py`` and ``tools/infer.py`` read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from detkit.engine import distributed as du
from detkit.engine.checkpoint import (
    CheckpointError,
    CheckpointManager,
    find_latest_checkpoint,
    load_checkpoint,
    load_latest_checkpoint,
)
from detkit.engine.weights import weights_misfit

__all__ = ["RESUME_KEYS", "RUN_KEYS", "RunCheckpoints", "check_resume", "epoch_boundary", "lean_state", "run_changes",
           "run_meta"]

# Entries a checkpoint needs for --resume.
RESUME_KEYS = ("model", "optimizer", "scheduler", "epoch", "iter", "epoch_iter", "rng")
# Settings that define a run's sample order and schedule (meta["run"]), with the config key a user changes.
RUN_KEYS = {
    "batch_size": "data.train.batch_size",
    "accumulate": "accumulation steps (train.nominal_batch / batch size)",
    "world_size": "number of processes",
    "img_size": "data.img_size",
    "num_classes": "number of classes",
    "dataset_size": "training images",
}

logger = logging.getLogger("detkit")


class RunCheckpoints:
    """``epoch_<E>.pth`` / ``iter_<I>.pth`` / ``best.pth`` of one run's work dir.

    Args:
        work_dir: the run's work dir.
        rank: this process's rank (rank 0 writes).
        keep_last: ``epoch_*`` / ``iter_*`` files kept.
    """

    def __init__(self, work_dir: str | os.PathLike, rank: int, keep_last: int) -> None:
        self.work_dir = Path(work_dir)
        self.rank = rank
        self.manager = CheckpointManager(self.work_dir, keep_last=keep_last)

    def latest(self) -> Path | None:
        return find_latest_checkpoint(self.work_dir)

    def save(self, name: str, state: Callable[[], dict[str, Any]], refusal: str | None) -> Path | None:
        """Write ``state()`` as ``name`` unless there is a ``refusal`` (logged); returns the path or
        None, the same answer on every rank (all ranks meet at a barrier)."""
        path: Path | None = self.work_dir / name
        if refusal is not None:
            logger.warning(f"not writing {name}: {refusal}; the newest checkpoint stays {self.latest()}")
            path = None
        elif self.rank == 0:
            self.manager.save(state(), name)
            logger.info(f"saved {path}")
        du.barrier()
        return path

    def save_best(self, state: Mapping[str, Any]) -> None:
        """``best.pth`` (never rotated out) as a weights file (:func:`lean_state`); rank 0 only."""
        self.manager.save(lean_state(state), "best.pth")

    def save_final(self, state: Callable[[], dict[str, Any]], refusal: str | None, fp16: bool) -> None:
        """End of training: ``last.pth`` (the weights, :func:`lean_state`) and ``best.pth`` in fp16 when
        ``fp16``; not written when there is a ``refusal`` (logged). Rank 0 writes; all ranks meet."""
        if refusal is not None:
            logger.warning(f"not writing last.pth: {refusal}; the newest checkpoint stays {self.latest()}")
        elif self.rank == 0:
            path = self.manager.save(lean_state(state(), fp16=fp16), "last.pth")
            best = self.work_dir / "best.pth"
            if fp16 and best.is_file():
                self.manager.save(lean_state(load_checkpoint(best), fp16=True), "best.pth")
            logger.info(f"saved {path} ({path.stat().st_size / 2**20:.1f} MiB, weights only"
                        f"{', fp16' if fp16 else ''}){'; best.pth in fp16' if fp16 and best.is_file() else ''}")
        du.barrier()

    def load_for_resume(self, resume: str, device: torch.device) -> tuple[Path, dict[str, Any]] | None:
        """The checkpoint ``--resume`` names (a path, or ``"auto"``: the newest in the work dir that
        loads, a newer unreadable one skipped with a warning); None when ``"auto"`` finds none.

        Raises:
            CheckpointError: unreadable, or not a training checkpoint (weights only: the message names
                ``load_from``, which a tool prints as ``--load-from``).
        """
        if resume == "auto":
            found = load_latest_checkpoint(self.work_dir, map_location=device)
            if found is None:
                logger.info(f"--resume: no checkpoint in {self.work_dir}; starting from scratch")
                return None
            path, ckpt = found
        else:
            path = Path(resume)
            ckpt = load_checkpoint(path, map_location=device)
        missing = [k for k in RESUME_KEYS if not isinstance(ckpt, Mapping) or k not in ckpt]
        if missing and isinstance(ckpt, Mapping) and (ckpt.get("meta") or {}).get("weights") in ("ema", "model"):
            raise CheckpointError("{path}: cannot resume from it: it holds the final weights only (no optimizer, "
                                  "schedule or RNG state); resume from an epoch_*.pth / iter_*.pth checkpoint, or "
                                  "use {load_from} to start a new run from these weights", values={"path": path})
        if missing:
            raise CheckpointError("{path}: cannot resume from it: not a detkit training checkpoint (missing "
                                  "{missing}); use {load_from} to start from its weights only",
                                  values={"path": path, "missing": ", ".join(missing)})
        return path, ckpt


def _plain_size(value: Any) -> Any:
    """``img_size`` as a plain value that compares equal after a round trip (tuples become lists)."""
    return list(value) if isinstance(value, (tuple, list)) else value


def run_meta(cfg: Mapping[str, Any], model: nn.Module, dataset_size: int, class_names: list[str] | None,
             batch_size: int, accumulate: int, world_size: int) -> dict[str, Any]:
    """A run's ``meta`` (module docstring): what a tool needs to use a checkpoint alone, and the
    settings :func:`run_changes` compares on ``--resume``."""
    data = cfg.get("data") or {}
    names = data.get("class_names") or class_names
    head = getattr(model, "head", None)
    num_classes = getattr(head, "num_classes", None) or getattr(model, "num_classes", None) or data.get("num_classes")
    img_size = _plain_size(data.get("img_size"))
    num_classes = int(num_classes) if num_classes is not None else None
    return {
        "class_names": [str(n) for n in names] if names else None,
        "num_classes": num_classes,
        "img_size": img_size,
        "run": {"batch_size": int(batch_size), "accumulate": int(accumulate), "world_size": int(world_size),
                "img_size": img_size, "num_classes": num_classes, "dataset_size": int(dataset_size)},
        "weights": "full",
        "dtype": "float32",
    }


def run_changes(ckpt: Mapping[str, Any], run: Mapping[str, Any]) -> list[str]:
    """The run-defining settings (:data:`RUN_KEYS`) whose value in ``run`` differs from the
    checkpoint's ``meta["run"]``, each as ``"<key> <now> (checkpoint: <then>)"``; empty for an
    older checkpoint without them."""
    stored = (ckpt.get("meta") or {}).get("run") or {}
    return [f"{RUN_KEYS[k]} {run[k]} (checkpoint: {stored[k]})" for k in RUN_KEYS
            if k in stored and k in run and _plain_size(stored[k]) != _plain_size(run[k])]


def check_resume(path: str | os.PathLike, ckpt: Mapping[str, Any], model: nn.Module, run: Mapping[str, Any],
                 anyway: bool) -> list[str]:
    """Refuse a checkpoint that does not fit ``model`` (one line naming the tensors and shapes, as
    ``load_weights(strict=True)`` gives), or whose run-defining settings differ from ``run`` unless
    ``anyway``; returns the accepted changes (empty: none).

    Raises:
        CheckpointError: another model (class count, width, head); changed settings without ``anyway``
            (the message names ``resume_anyway``, a tool's ``--resume-anyway``).
    """
    if misfit := weights_misfit(path, model.state_dict(), ckpt["model"], "cannot resume: "):
        raise misfit
    changes = run_changes(ckpt, run)
    if changes and not anyway:
        raise CheckpointError(
            "cannot resume from {path}: the run's settings changed: {changes}; continuing would change the order "
            "of the training images (some repeated, some skipped) and the schedule; restore them, or pass "
            "{resume_anyway:True} to continue from the next epoch boundary with the new settings",
            values={"path": os.fspath(path), "changes": "; ".join(changes)})
    return changes


def epoch_boundary(epoch: int, epoch_iter: int, iters_per_epoch: int, changes: list[str]) -> tuple[int, int]:
    """Where a run resumed with changed settings (``--resume-anyway``) continues: the next epoch
    boundary, so the new sample order starts afresh and no image is seen twice. Returns
    ``(epoch_iter, iter)``: an interrupted epoch is marked done (``epoch_iter = iters_per_epoch``:
    its remaining images skipped, its end still run); the global iteration is recounted in the new
    iterations per epoch, which the schedule follows. Logs a warning naming the changes."""
    skipped = epoch_iter > 0
    it = (epoch + int(skipped)) * iters_per_epoch
    logger.warning(f"--resume-anyway: {'; '.join(changes)}; continuing at the start of epoch "
                   f"{epoch + int(skipped) + 1} (iteration {it}) with the new settings"
                   + (f", the rest of epoch {epoch + 1} skipped" if skipped else ""))
    return (iters_per_epoch if skipped else 0), it


def lean_state(state: Mapping[str, Any], fp16: bool = False) -> dict[str, Any]:
    """The weights file of a training state: the EMA weights when there are some, else the model's,
    with ``meta`` (``weights``: which, ``dtype``), ``config``, ``epoch``, ``iter`` and ``best``;
    floating tensors in fp16 when ``fp16``. A weights file given again comes back unchanged
    (or converted to fp16)."""
    ema = state.get("ema")
    weights, which = (ema["module"], "ema") if ema else (state["model"], "model")
    meta = dict(state.get("meta") or {})
    if meta.get("weights") in ("ema", "model"):
        which = meta["weights"]  # already a weights file
    if fp16:
        weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    meta.update(weights=which, dtype="float16" if fp16 else meta.get("dtype", "float32"))
    keep = {k: state[k] for k in ("epoch", "iter", "config", "best") if k in state}
    return {"model": dict(weights), "ema": None, **keep, "meta": meta}
