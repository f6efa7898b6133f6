"""One training run per work dir: its lock, the earlier run's files, where the config dump goes.

Output paths are checked by :mod:`detkit.engine.output_paths`.

    lock = claim_work_dir("work_dirs/run1", resume=None, overwrite=False)   # before anything is written
    ...train...
    lock.release()

- :func:`config_dump_path` says where a run writes its merged config: ``config.py`` unless a file
  of that name is not a dump detkit wrote (a user's own config in the work dir), then
  ``config.dump.py`` beside it. Dumps start with :data:`CONFIG_DUMP_MARK`.
- :func:`claim_work_dir` takes a work dir for one training run: a lock file ``run.lock``
  (:data:`LOCK_NAME`, a :class:`detkit.io.PidLock`: JSON with the owner's pid, host, run id, start
  time and command) created atomically; a second run is refused with a one-line message naming
  the holder. A lock whose process is gone (same host, pid not running) is stale: it is taken over
  with a warning. A lock from another host cannot be checked and is refused (the message says
  which file to delete if that run is gone). Under ``torchrun`` only rank 0 takes the lock; every
  rank gets rank 0's verdict (the same error class and message).
- Without ``resume``, a work dir holding an earlier run (:func:`previous_run_files`: checkpoints,
  ``last_checkpoint``, ``metrics.jsonl`` / ``metrics.csv``) is refused, naming ``resume``, another
  ``work_dir`` and ``overwrite`` (a tool prints its flags: ``--resume``, ``--work-dir``,
  ``--overwrite``; :class:`detkit.errors.ArgumentMessage`); ``overwrite`` deletes that run's files
  (:func:`clear_previous_run`, only names detkit writes) before the new run starts.

Inside one process a newer claim on the same work dir takes the lock over from an older
:class:`WorkDirLock` (a notebook re-creating its Trainer); the older one then holds nothing.
"""

from __future__ import annotations

import os
import re
import socket
import time
import weakref
from pathlib import Path

from detkit.engine.checkpoint import checkpoint_temporaries
from detkit.engine.output_paths import OutputPathError, check_output_dir
from detkit.engine.run_report import ERRORS_FILE, REPORT_FILES
from detkit.errors import Argument, DetkitError, WorkDirError
from detkit.io import LockHolder, OutputWriteError, PidLock, free_space

__all__ = [
    "CONFIG_DUMP_MARK",
    "LOCK_NAME",
    "WorkDirError",
    "WorkDirLock",
    "claim_work_dir",
    "clear_previous_run",
    "config_dump_path",
    "previous_run_files",
]

LOCK_NAME = "run.lock"
# Files that mark an earlier training run (checkpoints, the resume pointer, metrics).
_RUN_RE = re.compile(r"^((epoch|iter)_\d+\.pth|best\.pth|last\.pth|last_checkpoint|metrics\.jsonl|metrics\.csv)$")
# Further files a run writes, deleted by --overwrite with the run files (plots, log, run report); the config
# dumps (_DUMP_NAMES) only when they start with CONFIG_DUMP_MARK.
_RUN_EXTRAS = ("train.log", "losses.png", "metrics.png", "assignment.png", "pr_curves.png", ".metrics.csv.tmp",
               *REPORT_FILES, ERRORS_FILE)
# The first line of every config dump a run writes into its work dir.
CONFIG_DUMP_MARK = "# detkit config dump"
# Where the dump goes: the first of these that is missing or a dump (never a user's own file).
_DUMP_NAMES = ("config.py", "config.dump.py")
# How long to wait for a lock file that another process is writing right now.
_UNREADABLE_WAIT_S = 1.0
_MAX_TRIES = 100


# ----------------------------------------------------------------------------------------------
# the config dump
# ----------------------------------------------------------------------------------------------


def _is_dump(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline().rstrip("\r\n") == CONFIG_DUMP_MARK
    except OSError:
        return False


def config_dump_path(work_dir: str | os.PathLike) -> Path:
    """Where a run writes its merged config in ``work_dir``: ``config.py`` when it is missing or a
    dump a run wrote (its first line is :data:`CONFIG_DUMP_MARK`), else ``config.dump.py`` (same
    rule): a file the user wrote is never replaced.

    Raises:
        WorkDirError: both names hold files the user wrote.
    """
    work_dir = Path(work_dir)
    for name in _DUMP_NAMES:
        path = work_dir / name
        if not os.path.lexists(path) or (path.is_file() and not path.is_symlink() and _is_dump(path)):
            return path
    raise WorkDirError("work dir {path}: {names} are files of yours (not config dumps), where the run writes its "
                       "merged config; move one of them or pick another {work_dir}",
                       values={"path": work_dir, "names": " and ".join(_DUMP_NAMES)})


# ----------------------------------------------------------------------------------------------
# earlier runs
# ----------------------------------------------------------------------------------------------


def previous_run_files(work_dir: str | os.PathLike) -> list[Path]:
    """The files of an earlier training run in ``work_dir`` (checkpoints, ``last_checkpoint``,
    ``metrics.jsonl`` / ``metrics.csv``), sorted by name; empty when there are none."""
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return []
    return sorted(p for p in work_dir.iterdir() if _RUN_RE.match(p.name) and p.is_file())


def clear_previous_run(work_dir: str | os.PathLike) -> list[Path]:
    """Delete an earlier run's files from ``work_dir``; returns what was deleted.

    Only names a training run writes: checkpoints and their temporaries, ``last_checkpoint``,
    metrics, ``train.log``, the config dump (``config.py`` / ``config.dump.py`` when it starts with
    :data:`CONFIG_DUMP_MARK`), the plots, TensorBoard event files under ``tb/``. Anything else in
    the folder (a user's own ``config.py``) is left alone.
    """
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return []
    gone = previous_run_files(work_dir)
    gone += [work_dir / n for n in _RUN_EXTRAS if (work_dir / n).is_file()]
    gone += [work_dir / n for n in _DUMP_NAMES if (work_dir / n).is_file() and _is_dump(work_dir / n)]
    gone += checkpoint_temporaries(work_dir)
    tb = work_dir / "tb"
    if tb.is_dir():
        gone += [p for p in tb.glob("events.out.tfevents.*") if p.is_file()]
    for p in gone:
        p.unlink(missing_ok=True)
    if tb.is_dir() and not any(tb.iterdir()):
        tb.rmdir()
    return gone


# ----------------------------------------------------------------------------------------------
# the lock
# ----------------------------------------------------------------------------------------------


# Locks held by this process, by lock-file path (a newer claim takes them over).
_HELD: dict[str, weakref.ref[WorkDirLock]] = {}


class WorkDirLock:
    """A claimed work dir. ``held`` is False on ranks other than 0 and after :meth:`release`.

    ``notes`` are warnings for the run's log (a stale lock taken over, files ``overwrite`` deleted).
    The lock (a :class:`detkit.io.PidLock` on ``run.lock``) is released by :meth:`release`, when the
    object is garbage-collected, or at exit.
    """

    def __init__(self, work_dir: Path, lock: PidLock | None = None, notes: list[str] | None = None) -> None:
        self.work_dir = work_dir
        self.path = work_dir / LOCK_NAME
        self._lock = lock
        self.holder: LockHolder | None = lock.holder if lock is not None else None
        self.notes = notes if notes is not None else []
        if lock is not None:
            _HELD[str(self.path.resolve())] = weakref.ref(self)

    @property
    def held(self) -> bool:
        return self._lock is not None and self._lock.held

    def release(self) -> None:
        """Delete the lock file (if it is still this run's); calling it again does nothing."""
        if self._lock is not None:
            self._lock.release()

    def _hand_over(self) -> None:
        """Give the lock up to a newer claim in this process, leaving the file in place."""
        if self._lock is not None:
            self._lock.detach()

    def __enter__(self) -> WorkDirLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _in_process_holder(path: Path) -> WorkDirLock | None:
    ref = _HELD.get(str(path.resolve()))
    lock = ref() if ref is not None else None
    return lock if lock is not None and lock.held else None


def _acquire(work_dir: Path) -> WorkDirLock:
    lock = PidLock(work_dir / LOCK_NAME)
    path = lock.path
    notes: list[str] = []
    deadline = time.monotonic() + _UNREADABLE_WAIT_S
    for _ in range(_MAX_TRIES):
        try:
            if lock.acquire():
                return WorkDirLock(work_dir, lock, notes)
        except OutputWriteError as e:  # a full disk or quota: one line, and no half-written temporary left
            cause = e.__cause__
            reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause or e)
            raise OutputPathError("{work_dir} {path}: cannot write the lock file {name} ({reason}; {free} there)",
                                  values={"path": work_dir, "name": path.name, "reason": reason,
                                          "free": free_space(work_dir)}) from None
        holder = lock.read()
        if holder is None:
            if path.exists() and time.monotonic() > deadline:
                raise WorkDirError(f"work dir {work_dir}: {path} exists but is not a detkit lock file; if no run "
                                   "uses this folder, delete it")
            time.sleep(0.05)  # being written, or released in between
            continue
        if holder.on_this_host() and holder.pid == os.getpid():  # a newer claim in this process (or a dead run's pid)
            older = _in_process_holder(path)
            if older is not None:
                older._hand_over()
            lock.remove_stale(holder)
            continue
        if holder.running() is False:
            if lock.remove_stale(holder):
                notes.append(f"work dir {work_dir}: took over a stale lock of {holder.describe()}, "
                             "which is no longer running")
            continue
        where = "" if holder.on_this_host() else (
            f"; it cannot be checked from {socket.gethostname()}: if that run is gone, delete {path}")
        raise WorkDirError("work dir {path} is in use by {holder}; wait for it to finish or pick another "
                           "{work_dir}{where}", values={"path": work_dir, "holder": holder.describe(), "where": where})
    raise WorkDirError(f"work dir {work_dir}: could not take {path} (other processes keep changing it)")


def _agree(verdict: DetkitError | str | None) -> DetkitError | str | None:
    """Rank 0's verdict on every rank (a no-op without torch.distributed); a user error crosses
    processes as the exception itself (pickled: its class and message)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return verdict
    box = [verdict]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def claim_work_dir(work_dir: str | os.PathLike, *, resume: str | None = None, overwrite: bool = False,
                   rank: int = 0) -> WorkDirLock:
    """Check and take ``work_dir`` for a training run, before anything is written into it.

    Args:
        work_dir: the run's output folder (created when missing).
        resume: the run continues an earlier one (``"auto"`` or a checkpoint path): an earlier
            run in the folder is expected, not refused.
        overwrite: delete an earlier run's files (:func:`clear_previous_run`) instead of refusing.
        rank: the process's rank; only rank 0 checks and locks, the others follow its verdict: a
            refusal reaches every rank as the same :class:`~detkit.errors.DetkitError` class and message.

    Returns:
        The lock (``held`` on rank 0), with ``notes`` to log.

    Raises:
        OutputPathError: ``work_dir`` cannot be a folder (a file, under a file, not writable).
        WorkDirError: another run holds it; or it holds an earlier run and neither ``resume``
            nor ``overwrite`` was given; or both were given.
        RuntimeError: (ranks other than 0) rank 0 failed with an error that is not the user's
            (rank 0 raises that error itself, with its traceback).
    """
    work_dir = Path(work_dir)
    lock: WorkDirLock = WorkDirLock(work_dir)
    verdict: DetkitError | str | None = None
    failure: BaseException | None = None
    if rank == 0:
        try:
            lock = _claim(work_dir, resume, overwrite)
        except DetkitError as e:
            verdict = e
        except OSError as e:  # e.g. a permission changed between the check and mkdir
            verdict = OutputPathError("{work_dir} {path}: {e}", values={"path": work_dir, "e": e})
        except BaseException as e:  # noqa: BLE001 - a bug: the other ranks stop too, rank 0 raises it below
            verdict, failure = f"{type(e).__name__}: {e}", e
    verdict = _agree(verdict)
    if verdict is None:
        return lock
    lock.release()
    if failure is not None:
        raise failure
    if isinstance(verdict, DetkitError):
        raise verdict
    raise RuntimeError(f"rank 0 failed to claim the work dir {work_dir}: {verdict}")


def _claim(work_dir: Path, resume: str | None, overwrite: bool) -> WorkDirLock:
    if resume and overwrite:
        raise WorkDirError("{resume} continues the run in the work dir and {overwrite} deletes it: pass one of "
                           "them", values={})
    check_output_dir(work_dir, Argument("work_dir"))
    work_dir.mkdir(parents=True, exist_ok=True)
    lock = _acquire(work_dir)
    try:
        earlier = previous_run_files(work_dir)
        if earlier and not resume:
            if not overwrite:
                shown = ", ".join(p.name for p in earlier[:4]) + (", ..." if len(earlier) > 4 else "")
                raise WorkDirError(
                    "work dir {path} holds an earlier run ({shown}); continue it with {resume:'auto'}, pick a new "
                    "{work_dir}, or pass {overwrite:True} to delete its checkpoints and metrics first",
                    values={"path": work_dir, "shown": shown})
            gone = clear_previous_run(work_dir)
            lock.notes.append(f"--overwrite: deleted {len(gone)} file(s) of the earlier run in {work_dir} "
                              f"({', '.join(p.name for p in gone[:6])}{', ...' if len(gone) > 6 else ''})")
    except BaseException:
        lock.release()
        raise
    return lock
