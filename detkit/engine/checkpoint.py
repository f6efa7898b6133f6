"""Checkpoint files: writing (atomic, keep-last-K rotation), reading, finding the newest, RNG state.

A detkit checkpoint is a dict saved with ``torch.save`` and read with ``torch.load(weights_only=True)``,
so it holds only tensors and plain Python values::

    {"model": state_dict, "ema": {"module": state_dict, "updates": int} | None,
     "optimizer": ..., "scheduler": ..., "scaler": ... | None,
     "epoch": int,           # epochs completed before the next iteration
     "iter": int,            # optimizer-loop iterations done so far (global)
     "epoch_iter": int,      # iterations done inside the current epoch (0 at an epoch boundary)
     "rng": {"python": ..., "numpy": ..., "torch": ByteTensor, "cuda": [ByteTensor, ...]},
     "config": str,          # detkit.config.format_config of the run's config
     "best": {"metric": str, "value": float} ...,
     "guard": {"loss_total": int, ...},   # counters of skipped non-finite steps
     "meta": {"class_names", "num_classes", "img_size", "run": {...}, ...},  # run_checkpoints.run_meta
     "epoch_end_pending": bool,  # an epoch_<E>.pth written before its evaluation
     "optimizer_auto": {"optimizer_steps": int, "num_classes": int} | None}  # train.optimizer="auto"'s inputs

``best.pth`` and ``last.pth`` are weights files (:func:`detkit.engine.run_checkpoints.lean_state`):
``model`` (the EMA weights when the run had an EMA, fp16 with ``train.checkpoint.final_fp16``),
``meta``, ``config``, ``epoch``, ``iter``, ``best``; :func:`detkit.engine.weights.load_weights` reads
both kinds into a model.

Safety: files are written atomically (a kill -9 at any moment leaves either the old or the new
file, never a partial one; a full disk is a one-line :class:`~detkit.io.OutputWriteError`). A
temporary's name carries its writer (``.<target>.<host>-<pid>.<random>.tmp``); the next save
removes only temporaries whose writer is
gone (same host, pid not running), never another live process's. Checkpoints are read with
``weights_only=True``, so a checkpoint whose pickle would run code is refused. A file that cannot
be read (truncated, corrupt, refused) raises :class:`CheckpointError` naming it;
:func:`load_latest_checkpoint` then falls back to the previous checkpoint with a warning.
:func:`detkit.engine.weights.load_weights` with ``strict=True`` (evaluation, inference, export)
refuses weights that do not fill the whole model, naming the tensors and shapes that differ.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import random
import re
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detkit.errors import CheckpointError
from detkit.io import OutputWriteError, atomic_save, atomic_write_text, process_gone, temporary_writer

__all__ = [
    "CheckpointError",
    "CheckpointManager",
    "OutputWriteError",
    "atomic_save",
    "checkpoint_candidates",
    "checkpoint_temporaries",
    "find_latest_checkpoint",
    "get_rng_state",
    "load_checkpoint",
    "load_latest_checkpoint",
    "preserved_rng",
    "set_rng_state",
]

logger = logging.getLogger("detkit")

LAST_POINTER = "last_checkpoint"  # text file in the work dir naming the newest checkpoint
FINAL_NAMES = ("best.pth", "last.pth")  # weights files: never rotated, never resumed from
_CKPT_RE = re.compile(r"^(epoch|iter)_(\d+)\.pth$")
# Temporaries of the run's atomic writes (detkit.io): ".<target>.<host>-<pid>.<random>.tmp" (mkstemp;
# files of older versions lack "<host>-<pid>" and are never removed automatically).
_WRITTEN = r"(?:(?:epoch|iter)_\d+\.pth|best\.pth|last\.pth|last_checkpoint|metrics\.csv)"
_TMP_RE = re.compile(rf"^\.({_WRITTEN})\..+\.tmp$")
# What torch.load raises on a truncated or corrupt file, by format and by where the cut falls.
_READ_ERRORS = (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError,
                KeyError, IndexError, AttributeError, ImportError, UnicodeDecodeError)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Read a checkpoint with ``torch.load(weights_only=True)``.

    Raises:
        CheckpointError: (a ValueError) naming ``path`` when the file is missing, truncated or
            corrupt, or when its pickle holds anything but tensors and plain values (such a
            pickle could run code; it is refused and nothing in it runs).
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except _READ_ERRORS as e:
        unsafe = _unsafe_globals(path) if isinstance(e, pickle.UnpicklingError) else []
        if unsafe:
            raise CheckpointError(
                f"{path}: refused to load: the file holds objects other than tensors and plain values, which "
                f"could run code when unpickled (GLOBAL {', '.join(unsafe)}). detkit loads checkpoints with "
                "weights_only=True; if you made this file yourself and trust it, re-save just its tensors "
                "(a state_dict)") from e
        raise _unreadable(path, e) from e


def _unsafe_globals(path: str | os.PathLike) -> list[str]:
    """The callables a checkpoint's pickle names beyond what ``weights_only`` loading allows (torch
    reads them without running anything); empty when there are none or torch cannot tell (a file of
    the legacy, non-zip format)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except _READ_ERRORS:
        return []


def _unreadable(path: str | os.PathLike, error: BaseException) -> CheckpointError:
    size = os.path.getsize(path) if os.path.exists(path) else 0
    first = (str(error).splitlines() or [""])[0][:200]
    return CheckpointError(f"{path}: cannot read checkpoint ({size} bytes): the file is truncated or corrupt "
                           f"({type(error).__name__}: {first})")


# ----------------------------------------------------------------------------------------------
# RNG state as plain values / tensors (loadable with weights_only=True)
# ----------------------------------------------------------------------------------------------


def get_rng_state() -> dict[str, Any]:
    """Python, numpy, torch (CPU) and CUDA generator states as plain lists and tensors."""
    version, state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": [version, list(state), gauss],
        "numpy": [np_name, np.asarray(np_keys).tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned (CUDA states only when the device count matches)."""
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run the body without changing the global RNGs (python, numpy, torch, CUDA): e.g. an evaluation
    between an epoch's checkpoint and the next epoch, which a resumed run may repeat or skip."""
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


# ----------------------------------------------------------------------------------------------
# rotation
# ----------------------------------------------------------------------------------------------


class CheckpointManager:
    """Writes ``epoch_<E>.pth`` / ``iter_<I>.pth`` into a work dir, keeping the newest ``keep_last``.

    ``best.pth`` (the best evaluation so far) and ``last.pth`` (the weights at the end of training)
    are written separately and never rotated out.
    ``last_checkpoint`` names the newest file, for ``--resume`` without a path.
    """

    def __init__(self, work_dir: str | os.PathLike, keep_last: int = 3) -> None:
        if keep_last < 1:
            raise ValueError(f"checkpoint keep_last must be >= 1, got {keep_last}")
        self.work_dir = Path(work_dir)
        self.keep_last = keep_last
        self._cleaned = False

    def save(self, state: Mapping[str, Any], name: str) -> Path:
        """Write ``state`` as ``<work_dir>/<name>`` atomically, update the pointer, rotate old files.

        The first save also removes temporaries that a killed earlier run left behind.
        """
        if not _CKPT_RE.match(name) and name not in FINAL_NAMES:
            raise ValueError(f"checkpoint name {name!r} must be epoch_<N>.pth, iter_<N>.pth, best.pth or last.pth")
        if not self._cleaned:
            self.remove_stale_temporaries()
            self._cleaned = True
        path = self.work_dir / name
        atomic_save(dict(state), path)
        if name not in FINAL_NAMES:
            atomic_write_text(self.work_dir / LAST_POINTER, name + "\n")
            self._rotate()
        return path

    def checkpoints(self) -> list[Path]:
        """Rotated checkpoints in the work dir, oldest first (by the iteration stored in the name)."""
        found = []
        for p in self.work_dir.glob("*.pth"):
            if _CKPT_RE.match(p.name):
                found.append((p.stat().st_mtime_ns, p))
        return [p for _, p in sorted(found)]

    def _rotate(self) -> None:
        for old in self.checkpoints()[: -self.keep_last]:
            old.unlink(missing_ok=True)

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete temporaries that killed writers left behind (writer on this host, no longer
        running); returns them. A live process's temporary is never touched."""
        stale = checkpoint_temporaries(self.work_dir, dead_writers_only=True)
        for p in stale:
            p.unlink(missing_ok=True)
        return stale


def checkpoint_temporaries(work_dir: str | os.PathLike, dead_writers_only: bool = False) -> list[Path]:
    """Temporaries of checkpoint writes in ``work_dir``; with ``dead_writers_only``, only those whose
    writer (named in the file: host and pid) ran on this host and is no longer running."""
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return []
    found = sorted(p for p in work_dir.glob(".*.tmp") if _TMP_RE.match(p.name))
    if not dead_writers_only:
        return found
    stale = []
    for p in found:
        m = _TMP_RE.match(p.name)
        writer = temporary_writer(p.name, m.group(1)) if m else None
        if writer is not None and process_gone(*writer):
            stale.append(p)
    return stale


def checkpoint_candidates(work_dir: str | os.PathLike) -> list[Path]:
    """Checkpoints to resume from, newest first: the one ``last_checkpoint`` names, then the other
    ``epoch_*`` / ``iter_*`` files by modification time."""
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return []
    found = CheckpointManager(work_dir).checkpoints()[::-1]
    pointer = work_dir / LAST_POINTER
    try:
        named = pointer.read_text(encoding="utf-8").strip() if pointer.is_file() else ""
    except (OSError, UnicodeDecodeError):
        named = ""
    if _CKPT_RE.match(named) and (work_dir / named).is_file():
        found = [work_dir / named] + [p for p in found if p.name != named]
    return found


def find_latest_checkpoint(work_dir: str | os.PathLike) -> Path | None:
    """The checkpoint ``last_checkpoint`` names, else the newest ``epoch_*/iter_*.pth``, else None
    (the file is not read; :func:`load_latest_checkpoint` also checks that it loads)."""
    found = checkpoint_candidates(work_dir)
    return found[0] if found else None


def load_latest_checkpoint(work_dir: str | os.PathLike,
                           map_location: str | torch.device = "cpu") -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of ``work_dir`` that loads, as ``(path, checkpoint)``; None when there is none.

    A newer file that cannot be read is skipped with a warning naming it and the reason.

    Raises:
        CheckpointError: when checkpoints exist but none of them can be read.
    """
    problems = []
    for path in checkpoint_candidates(work_dir):
        try:
            ckpt = load_checkpoint(path, map_location=map_location)
        except CheckpointError as e:
            logger.warning(f"{e}\n  skipping it; trying the previous checkpoint")
            problems.append(str(e))
            continue
        if not isinstance(ckpt, Mapping) or "model" not in ckpt:
            msg = f"{path}: not a detkit training checkpoint (no 'model' entry)"
            logger.warning(f"{msg}; trying the previous checkpoint")
            problems.append(msg)
            continue
        return path, dict(ckpt)
    if problems:
        raise CheckpointError(f"no readable checkpoint in {work_dir}:\n  " + "\n  ".join(problems))
    return None
