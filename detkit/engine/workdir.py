"""One training run per work dir: its lock, the earlier run's files, where the config dump goes.

Output paths are checked by :mod:`detkit.engine.output_paths`.

    lock = claim_work_dir("work_dirs/run1", resume=None, overwrite=False)   # before anything is written
    ...train...
    lock.release()

- :func:`config_dump_path` says where a run writes its merged config: ``config.py`` unless a file
  of that name is not a dump detkit wrote (a user's own config in the work dir), then
  ``config.dump.py`` beside it. Dumps start with :data:`CONFIG_DUMP_MARK`.
- :func:`claim_work_dir` takes a work dir for one training run: a lock file ``run.lock``
  (:data:`LOCK_NAME`, JSON with the owner's pid, host, run id, start time and command) created
  atomically; a second run is refused with a one-line message naming the holder. A lock whose
  process is gone (same host, pid not running) is stale: it is taken over with a warning. A lock
  from another host cannot be checked and is refused (the message says which file to delete if
  that run is gone). Under ``torchrun`` only rank 0 takes the lock; every rank gets rank 0's verdict.
- Without ``resume``, a work dir holding an earlier run (:func:`previous_run_files`: checkpoints,
  ``last_checkpoint``, ``metrics.jsonl`` / ``metrics.csv``) is refused, naming ``--resume``, a new
  ``--work-dir`` and ``--overwrite``; ``overwrite`` deletes that run's files
  (:func:`clear_previous_run`, only names detkit writes) before the new run starts.

Inside one process a newer claim on the same work dir takes the lock over from an older
:class:`WorkDirLock` (a notebook re-creating its Trainer); the older one then holds nothing.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
import uuid
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path

from detkit.engine.checkpoint import checkpoint_temporaries
from detkit.engine.output_paths import OutputPathError, check_output_dir
from detkit.engine.run_report import ERRORS_FILE, REPORT_FILES
from detkit.errors import WorkDirError
from detkit.fileio import free_space

__all__ = [
    "CONFIG_DUMP_MARK",
    "LOCK_NAME",
    "LockHolder",
    "WorkDirError",
    "WorkDirLock",
    "claim_work_dir",
    "clear_previous_run",
    "config_dump_path",
    "pid_alive",
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
    raise WorkDirError(f"work dir {work_dir}: {' and '.join(_DUMP_NAMES)} are files of yours (not config dumps), "
                       "where the run writes its merged config; move one of them or pick another --work-dir")


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


@dataclass(frozen=True)
class LockHolder:
    """What a lock file says about the run that holds the work dir."""

    pid: int
    host: str
    run_id: str
    started: str
    command: str

    @classmethod
    def this_process(cls) -> LockHolder:
        return cls(os.getpid(), socket.gethostname(), uuid.uuid4().hex, time.strftime("%Y-%m-%d %H:%M:%S"),
                   " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300])

    def describe(self) -> str:
        return f"process {self.pid} on {self.host} (started {self.started}: {self.command})"


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (a process of another user counts as running)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_holder(path: Path) -> LockHolder | None:
    """The holder a lock file names; None when it is missing, empty or not a lock file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return LockHolder(int(data["pid"]), str(data["host"]), str(data["run_id"]), str(data["started"]),
                          str(data["command"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _create(path: Path, holder: LockHolder) -> bool:
    """Create the lock file with ``holder`` unless one exists (atomically, complete when visible)."""
    tmp = path.with_name(f".{path.name}.{holder.host}-{holder.pid}.tmp")
    try:
        try:
            tmp.write_text(json.dumps(asdict(holder)) + "\n", encoding="utf-8")
        except OSError as e:  # a full disk or quota: one line, and no half-written temporary left
            raise OutputPathError(f"--work-dir {path.parent}: cannot write the lock file {path.name} "
                                  f"({e.strerror or e}; {free_space(path.parent)} there)") from None
        os.link(tmp, path)  # fails when the lock exists; readers never see a half-written file
        return True
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: exclusive create instead
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(asdict(holder)) + "\n")
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _remove_stale(path: Path, seen: LockHolder) -> bool:
    """Remove the lock file if it still names ``seen`` (moved aside first, so two processes taking
    over the same stale lock cannot remove each other's new one)."""
    aside = path.with_name(f".{path.name}.stale-{socket.gethostname()}-{os.getpid()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    if _read_holder(aside) != seen:  # a new lock appeared in between: put it back
        try:
            os.link(aside, path)
        except OSError:
            pass
        aside.unlink(missing_ok=True)
        return False
    aside.unlink(missing_ok=True)
    return True


def _release_file(path: str, run_id: str) -> None:
    """Delete the lock file at ``path`` if it is still ``run_id``'s (finalizer: never raises)."""
    holder = _read_holder(Path(path))
    if holder is not None and holder.run_id == run_id:
        try:
            os.unlink(path)
        except OSError:
            pass


# Locks held by this process, by lock-file path (a newer claim takes them over).
_HELD: dict[str, weakref.ref[WorkDirLock]] = {}


class WorkDirLock:
    """A claimed work dir. ``held`` is False on ranks other than 0 and after :meth:`release`.

    ``notes`` are warnings for the run's log (a stale lock taken over, files ``overwrite`` deleted).
    The lock is released by :meth:`release`, when the object is garbage-collected, or at exit.
    """

    def __init__(self, work_dir: Path, holder: LockHolder | None = None, notes: list[str] | None = None) -> None:
        self.work_dir = work_dir
        self.path = work_dir / LOCK_NAME
        self.holder = holder
        self.notes = notes if notes is not None else []
        self._finalizer: weakref.finalize | None = None
        if holder is not None:
            self._finalizer = weakref.finalize(self, _release_file, str(self.path), holder.run_id)
            _HELD[str(self.path.resolve())] = weakref.ref(self)

    @property
    def held(self) -> bool:
        return self._finalizer is not None and self._finalizer.alive

    def release(self) -> None:
        """Delete the lock file (if it is still this run's); calling it again does nothing."""
        if self._finalizer is not None:
            self._finalizer()

    def _hand_over(self) -> None:
        """Give the lock up to a newer claim in this process, leaving the file in place."""
        if self._finalizer is not None:
            self._finalizer.detach()

    def __enter__(self) -> WorkDirLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _in_process_holder(path: Path) -> WorkDirLock | None:
    ref = _HELD.get(str(path.resolve()))
    lock = ref() if ref is not None else None
    return lock if lock is not None and lock.held else None


def _acquire(work_dir: Path) -> WorkDirLock:
    path = work_dir / LOCK_NAME
    me = LockHolder.this_process()
    notes: list[str] = []
    deadline = time.monotonic() + _UNREADABLE_WAIT_S
    for _ in range(_MAX_TRIES):
        if _create(path, me):
            return WorkDirLock(work_dir, me, notes)
        holder = _read_holder(path)
        if holder is None:
            if path.exists() and time.monotonic() > deadline:
                raise WorkDirError(f"work dir {work_dir}: {path} exists but is not a detkit lock file; if no run "
                                   "uses this folder, delete it")
            time.sleep(0.05)  # being written, or released in between
            continue
        same_host = holder.host == socket.gethostname()
        if same_host and holder.pid == os.getpid():  # a newer claim in this process (or a dead run's pid)
            older = _in_process_holder(path)
            if older is not None:
                older._hand_over()
            _remove_stale(path, holder)
            continue
        if same_host and not pid_alive(holder.pid):
            if _remove_stale(path, holder):
                notes.append(f"work dir {work_dir}: took over a stale lock of {holder.describe()}, "
                             "which is no longer running")
            continue
        where = "" if same_host else (f"; it cannot be checked from {socket.gethostname()}: if that run is gone, "
                                      f"delete {path}")
        raise WorkDirError(f"work dir {work_dir} is in use by {holder.describe()}; wait for it to finish or "
                           f"pick another --work-dir{where}")
    raise WorkDirError(f"work dir {work_dir}: could not take {path} (other processes keep changing it)")


def _agree(error: str | None) -> str | None:
    """Rank 0's verdict on every rank (a no-op without torch.distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return error
    box = [error]
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
        rank: the process's rank; only rank 0 checks and locks, the others follow its verdict.

    Returns:
        The lock (``held`` on rank 0), with ``notes`` to log.

    Raises:
        OutputPathError: ``work_dir`` cannot be a folder (a file, under a file, not writable).
        WorkDirError: another run holds it; or it holds an earlier run and neither ``resume``
            nor ``overwrite`` was given; or both were given.
    """
    work_dir = Path(work_dir)
    lock, error = WorkDirLock(work_dir), None
    if rank == 0:
        try:
            lock = _claim(work_dir, resume, overwrite)
        except ValueError as e:
            error = f"{type(e).__name__}:{e}"
        except OSError as e:  # e.g. a permission changed between the check and mkdir
            error = f"{OutputPathError.__name__}:--work-dir {work_dir}: {e}"
    verdict = _agree(error)
    if verdict is not None:
        lock.release()
        kind, _, message = verdict.partition(":")
        raise (OutputPathError if kind == OutputPathError.__name__ else WorkDirError)(message)
    return lock


def _claim(work_dir: Path, resume: str | None, overwrite: bool) -> WorkDirLock:
    if resume and overwrite:
        raise WorkDirError("--resume continues the run in the work dir and --overwrite deletes it: pass one of them")
    check_output_dir(work_dir, "--work-dir")
    work_dir.mkdir(parents=True, exist_ok=True)
    lock = _acquire(work_dir)
    try:
        earlier = previous_run_files(work_dir)
        if earlier and not resume:
            if not overwrite:
                shown = ", ".join(p.name for p in earlier[:4]) + (", ..." if len(earlier) > 4 else "")
                raise WorkDirError(
                    f"work dir {work_dir} holds an earlier run ({shown}); continue it with --resume, pick a new "
                    "--work-dir, or pass --overwrite to delete its checkpoints and metrics first")
            gone = clear_previous_run(work_dir)
            lock.notes.append(f"--overwrite: deleted {len(gone)} file(s) of the earlier run in {work_dir} "
                              f"({', '.join(p.name for p in gone[:6])}{', ...' if len(gone) > 6 else ''})")
    except BaseException:
        lock.release()
        raise
    return lock
