"""A training run's checkpoints: written by rank 0 only when the weights are sound, read back for --resume.

:class:`RunCheckpoints` wraps :class:`~detkit.engine.checkpoint.CheckpointManager` (atomic writes,
rotation, ``last_checkpoint``) with what a distributed run needs: one writer, the same answer on
every rank, a refusal (a non-finite streak, non-finite weights) logged instead of a write, and
the checkpoint ``--resume`` continues from, checked to be a whole training checkpoint.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from detkit.engine import distributed as du
from detkit.engine.checkpoint import (
    CheckpointError, CheckpointManager, find_latest_checkpoint, load_checkpoint, load_latest_checkpoint,
)

__all__ = ["RESUME_KEYS", "RunCheckpoints"]

# Entries a checkpoint needs for --resume.
RESUME_KEYS = ("model", "optimizer", "scheduler", "epoch", "iter", "epoch_iter", "rng")

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
        """``best.pth`` (never rotated out); rank 0 only."""
        self.manager.save(state, "best.pth")

    def load_for_resume(self, resume: str, device: torch.device) -> tuple[Path, dict[str, Any]] | None:
        """The checkpoint ``--resume`` names (a path, or ``"auto"``: the newest in the work dir that
        loads, a newer unreadable one skipped with a warning); None when ``"auto"`` finds none.

        Raises:
            CheckpointError: unreadable, or not a training checkpoint (weights only: use --load-from).
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
        if missing:
            raise CheckpointError(f"{path}: cannot resume from it: not a detkit training checkpoint (missing "
                                  f"{', '.join(missing)}); use --load-from to start from its weights only")
        return path, ckpt
