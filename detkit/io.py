"""Shared file infrastructure: atomic writes, lock files naming their holder, free space.

    from detkit.io import atomic_write_text
    atomic_write_text("results.json", json.dumps(results))

**Atomic writes** (:func:`atomic_write`; :func:`atomic_write_text`, :func:`atomic_write_bytes`,
:func:`atomic_save` for ``torch.save``, :func:`atomic_save_figure` go through it). Every write goes
into a temporary next to the target (``.<name>.<host>-<pid>.<random>.tmp``, so a clean-up can tell
a killed writer's file from a live one's: :func:`temporary_writer`, :func:`process_gone`), is
flushed and fsynced, then ``os.replace``-d over the target. Anything that fails on the way removes
the temporary and leaves the previous file as it was. A write the file system refuses (a full disk
or quota, a read-only or special file system, no permission) raises :class:`OutputWriteError` (an
:class:`~detkit.errors.OutputError`) with one line naming the path, the reason and, for a full
disk, the space left, which the tools report as ``error: ...`` with exit status 2. Any other
exception (a bug in the ``write`` callback) is re-raised as it is.

**Lock files** (:class:`PidLock`): a file created exclusively (complete when it becomes visible)
holding JSON that names its holder (:class:`LockHolder`: pid, host, a claim id, start time,
command). A lock whose holder ran on this host and is no longer running (:meth:`LockHolder.running`)
is stale and can be taken over (:meth:`PidLock.remove_stale`); one from another host cannot be
checked. The work dir's ``run.lock`` (:mod:`detkit.engine.workdir`) and the shapes set's generation
marker (:mod:`detkit.data.shapes`) are such locks.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from detkit.errors import OutputError

__all__ = ["LockHolder", "OutputWriteError", "PidLock", "atomic_save", "atomic_save_figure", "atomic_write",
           "atomic_write_bytes", "atomic_write_text", "free_space", "fsync_dir", "pid_alive", "process_gone",
           "read_lock", "temporary_writer", "write_error"]

_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
# What torch.save raises (a RuntimeError, its writer's OSError swallowed) when the file could not be
# written in full: "unexpected pos N vs M" for a file object, "file write failed" for a path.
_TORCH_WRITE_FAILED = ("unexpected pos", "file write failed")


class OutputWriteError(OutputError):
    """An output file could not be written (full disk, quota, read-only or special file system,
    permissions); the previous file at that path, if any, is intact and no temporary is left."""


def atomic_write(path: str | os.PathLike, mode: str, write: Callable[[IO[Any]], Any], **open_kwargs: Any) -> None:
    """``write(f)`` into a temporary next to ``path`` (opened with ``mode`` and ``open_kwargs``),
    fsync, ``os.replace`` onto ``path``, fsync the folder. The folder must exist.

    Raises:
        OutputWriteError: the file system refused the write (see the module docstring); ``path``
            keeps its previous content and the temporary is removed.
    """
    path = Path(path)
    writer = f"{socket.gethostname()}-{os.getpid()}"  # read at each call: a forked child has its own pid
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{writer}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from e
    try:
        os.chmod(tmp, _file_mode(path))  # mkstemp makes 0600 files: give the one a plain open() would
        with os.fdopen(fd, mode, **open_kwargs) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if _refused_by_file_system(e):
            raise write_error(path, e) from e
        raise
    fsync_dir(path.parent)


def _file_mode(path: Path) -> int:
    """The permission bits of the file being replaced, or those a new file gets (0666 less the umask)."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_write`)."""
    atomic_write(path, "w", lambda f: f.write(text), encoding="utf-8")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`atomic_write`)."""
    atomic_write(path, "wb", lambda f: f.write(data))


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to ``path`` atomically (:func:`atomic_write`), creating its folder.

    Raises:
        OutputWriteError: a full disk or another refused write (torch's short-write error included),
            in one line naming ``path``; the previous file stays and no temporary is left.
    """
    import torch  # here: the rest of this module needs only the standard library

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, "wb", lambda f: torch.save(obj, f))


def atomic_save_figure(fig: Any, path: str | os.PathLike, **savefig_kwargs: Any) -> None:
    """Save a matplotlib figure to ``path`` atomically (:func:`atomic_write`), in the format its suffix
    names (PNG without one); ``savefig_kwargs`` go to ``fig.savefig`` (``dpi=110``)."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    atomic_write(path, "wb", lambda f: fig.savefig(f, format=fmt, **savefig_kwargs))


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename inside ``directory`` durable (best effort: some platforms have no directory fds)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _refused_by_file_system(error: BaseException) -> bool:
    if isinstance(error, OSError):
        return True
    return isinstance(error, RuntimeError) and any(s in str(error) for s in _TORCH_WRITE_FAILED)


def _disk_full(error: BaseException) -> bool:
    """ENOSPC / EDQUOT, directly or as the cause of torch's RuntimeError (or torch's own message)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _DISK_FULL:
            return True
        seen = seen.__cause__ or seen.__context__
    return isinstance(error, RuntimeError)  # torch hides the OSError: a short write is a full disk


def free_space(directory: str | os.PathLike) -> str:
    """The space left on ``directory``'s file system, readably (``"1.2 MiB free"``)."""
    try:
        free = float(shutil.disk_usage(directory).free)
    except OSError:
        return "unknown free space"
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if free < 1024 or unit == "GiB":
            return f"{free:.0f} {unit} free" if unit == "bytes" else f"{free:.1f} {unit} free"
        free /= 1024
    return ""  # not reached


def write_error(path: str | os.PathLike, error: BaseException, kept: str | None = None) -> OutputWriteError:
    """The one-line :class:`OutputWriteError` for a write of ``path`` that ``error`` (an OSError, or
    torch's short-write RuntimeError) stopped: the path, the reason (for a full disk: the free
    space) and ``kept``, what became of the file (default: for an atomic write)."""
    path = Path(path)
    if kept is None:
        kept = "the previous file is unchanged" if path.exists() else "nothing was written"
    if _disk_full(error):
        return OutputWriteError(f"cannot write {path}: disk full or quota exceeded "
                                f"({free_space(path.parent)} on {path.parent}); {kept}")
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error).splitlines()[0]
    return OutputWriteError(f"cannot write {path}: {reason}; {kept}")


# ----------------------------------------------------------------------------------------------
# temporaries and processes
# ----------------------------------------------------------------------------------------------


def temporary_writer(tmp_name: str, target_name: str) -> tuple[str, int] | None:
    """``(host, pid)`` of the process that wrote ``tmp_name``, a temporary of an atomic write of a
    file called ``target_name`` (``.<target>.<host>-<pid>.<random>.tmp``); None for another name."""
    m = re.fullmatch(rf"\.{re.escape(target_name)}\.(.+)-(\d+)\.[^.]+\.tmp", tmp_name)
    return (m.group(1), int(m.group(2))) if m else None


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


def process_gone(host: str, pid: int) -> bool:
    """Whether process ``pid`` of ``host`` is known to have ended: it ran on this host and does
    not run now (a process of another host cannot be checked: False)."""
    return host == socket.gethostname() and not pid_alive(pid)


# ----------------------------------------------------------------------------------------------
# lock files
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock file: ``pid`` on ``host``, the claim's ``run_id`` (unique per claim), when
    it ``started`` and the ``command`` it runs."""

    pid: int
    host: str
    run_id: str = ""
    started: str = ""
    command: str = ""

    @classmethod
    def this_process(cls) -> LockHolder:
        """This process, with a new claim id."""
        return cls(os.getpid(), socket.gethostname(), uuid.uuid4().hex, time.strftime("%Y-%m-%d %H:%M:%S"),
                   " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300])

    def on_this_host(self) -> bool:
        return self.host == socket.gethostname()

    def running(self) -> bool | None:
        """True / False for a holder on this host; None for one on another host (cannot be checked)."""
        return pid_alive(self.pid) if self.on_this_host() else None

    def describe(self) -> str:
        started = f" (started {self.started}: {self.command})" if self.started else ""
        return f"process {self.pid} on {self.host}{started}"


def read_lock(path: str | os.PathLike) -> LockHolder | None:
    """The holder a lock file names; None when it is missing, empty or not a lock file (JSON with
    at least ``pid`` and ``host``)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return LockHolder(int(data["pid"]), str(data["host"]),
                          *(str(data.get(k, "")) for k in ("run_id", "started", "command")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _release_file(path: str, run_id: str) -> None:
    """Delete the lock file at ``path`` if it is still ``run_id``'s (a finalizer: never raises)."""
    holder = read_lock(path)
    if holder is not None and holder.run_id == run_id:
        with contextlib.suppress(OSError):
            os.unlink(path)


class PidLock:
    """A lock file at ``path`` naming the process that holds it (module docstring).

    :meth:`acquire` creates it exclusively; :meth:`release` (also run when the object is
    garbage-collected, or at exit) deletes it if it still names this claim. ``info`` is written
    into the file next to the holder (what a reader should know about the claim).

        lock = PidLock(folder / ".generating.json", size=320)
        if not lock.acquire():
            holder = lock.read()          # who has it; stale when holder.running() is False
        ...
        lock.release()
    """

    def __init__(self, path: str | os.PathLike, **info: Any) -> None:
        self.path = Path(path)
        self.info: Mapping[str, Any] = info
        self.holder: LockHolder | None = None
        self._finalizer: weakref.finalize | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock (acquired, not released or handed over)."""
        return self._finalizer is not None and self._finalizer.alive

    def read(self) -> LockHolder | None:
        """The holder the file names now (:func:`read_lock`)."""
        return read_lock(self.path)

    def acquire(self) -> bool:
        """Create the lock file naming this process unless one exists; True when it was created.
        The file is complete when it becomes visible (written aside, then hard-linked in place;
        an exclusive create where the file system has no hard links).

        Raises:
            OutputWriteError: the file could not be written (a full disk: one line with the free
                space; the cause is the OSError); no lock is taken and no temporary is left.
        """
        holder = LockHolder.this_process()
        text = json.dumps({**self.info, **asdict(holder)}) + "\n"
        tmp = self.path.with_name(f".{self.path.name}.{holder.host}-{holder.pid}.tmp")
        try:
            try:
                tmp.write_text(text, encoding="utf-8")
            except OSError as e:
                raise write_error(self.path, e, kept="no lock was taken") from e
            os.link(tmp, self.path)  # fails when the lock exists; readers never see a half-written file
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: exclusive create instead
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
        finally:
            tmp.unlink(missing_ok=True)
        self.holder = holder
        self._finalizer = weakref.finalize(self, _release_file, str(self.path), holder.run_id)
        return True

    def remove_stale(self, seen: LockHolder | None) -> bool:
        """Remove the lock file if it still names ``seen`` (None: a file that is not a lock file);
        moved aside first, so two processes taking over the same stale lock cannot remove each
        other's new one. True when it was removed."""
        aside = self.path.with_name(f".{self.path.name}.stale-{socket.gethostname()}-{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        if read_lock(aside) != seen:  # a new lock appeared in between: put it back
            with contextlib.suppress(OSError):
                os.link(aside, self.path)
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        return True

    def release(self) -> None:
        """Delete the lock file (if it still names this claim); calling it again does nothing."""
        if self._finalizer is not None:
            self._finalizer()

    def detach(self) -> None:
        """Stop holding the lock without deleting the file (a newer claim of this process took it)."""
        if self._finalizer is not None:
            self._finalizer.detach()
