"""Atomic file writes: a reader sees the old file or the new one, never a partial one.

    from detkit.fileio import atomic_write_text
    atomic_write_text("results.json", json.dumps(results))

Every write goes into a temporary next to the target (``.<name>.<host>-<pid>.<random>.tmp``, so a
clean-up can tell a killed writer's file from a live one's), is flushed and fsynced, then
``os.replace``-d over the target. Anything that fails on the way removes the temporary and leaves
the previous file as it was. A write the file system refuses (a full disk or quota, a read-only
or special file system, no permission) raises :class:`OutputWriteError`, a ``ValueError`` with one
line naming the path, the reason and, for a full disk, the space left, which the tools report as
``error: ...`` with exit status 2. Any other exception (a bug in the ``write`` callback) is
re-raised as it is.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from detkit.errors import OutputError

__all__ = ["OutputWriteError", "atomic_save_figure", "atomic_write", "atomic_write_bytes", "atomic_write_text",
           "free_space", "fsync_dir", "write_error"]

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
        free = shutil.disk_usage(directory).free
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
