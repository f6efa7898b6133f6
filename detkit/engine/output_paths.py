"""Output paths checked before any work: writable, and never one of the tool's own inputs.

- :func:`check_output_dir` / :func:`check_output_file` raise :class:`OutputPathError` (a
  ``ValueError``: exit status 2 in the tools) when a path cannot be written: a file where a folder
  is needed or the reverse, a parent that is a file, a folder without write permission, a folder
  where no file can be created (``/proc``, a read-only file system: a file is created there and
  deleted at once to find out). Tools call them before the work, so a long evaluation is never
  lost to a bad ``--out``. ``what`` names the argument in the message: a tool passes its flag
  (``"--out"``), the library an :class:`~detkit.errors.Argument` (``Argument("work_dir")``: spelled
  ``work_dir`` for Python, ``--work-dir`` by a tool).
- :func:`check_not_input` refuses an output path that is one of the tool's inputs or lies inside
  an input folder (resolved through symlinks), and an output folder that holds an input file a
  tool would replace by name; :func:`config_input_paths` lists the existing paths a config's
  dataset entries name, so a tool can pass them as inputs.
- :func:`numbered_dir` picks a default output folder per run (``work_dirs/infer``, then
  ``work_dirs/infer2``, ``infer3``, ...): a run the user did not name never replaces another's files,
  and with ``create`` two runs started together never share one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from detkit.errors import Argument, OutputError

__all__ = ["OutputPathError", "check_not_input", "check_output_dir", "check_output_file", "config_input_paths",
           "numbered_dir"]


class OutputPathError(OutputError):
    """An output path that cannot be written (the message names the argument and the reason)."""


def _refuse(template: str, what: str | Argument, path: object, **values: object) -> OutputPathError:
    """The error for ``path`` given as ``what``: ``template`` with ``{what}`` and ``{path}`` fields."""
    return OutputPathError(template, values={"what": what, "path": path, **values})


def _first_existing(path: Path) -> Path:
    """``path`` or its nearest existing ancestor."""
    for p in (path, *path.parents):
        if os.path.lexists(p):
            return p
    return Path(".")


def _check_creatable(folder: Path, what: str | Argument, shown: Path) -> None:
    """The nearest existing ancestor of ``folder`` is a folder where files can be created (so
    ``folder`` can be made): permissions, then an empty file created and deleted at once, which
    finds what permissions do not tell (``/proc``, a read-only file system, root on either)."""
    base = _first_existing(folder)
    if not base.is_dir():
        raise _refuse("{what} {path}: {base} is a file, not a folder", what, shown, base=base)
    if not os.access(base, os.W_OK | os.X_OK):
        raise _refuse("{what} {path}: no permission to write in {base}", what, shown, base=base)
    try:
        fd, probe = tempfile.mkstemp(prefix=".detkit-write-check-", suffix=".tmp", dir=base)
    except OSError as e:
        raise _refuse("{what} {path}: cannot create files in {base} ({why})", what, shown, base=base,
                      why=e.strerror or e) from None
    os.close(fd)
    os.unlink(probe)


def check_output_dir(path: str | os.PathLike, what: str | Argument = "output folder") -> Path:
    """Raise :class:`OutputPathError` unless ``path`` is (or can be made) a writable folder.

    Nothing is created. ``what`` names the argument in the message (a tool's flag, ``"--work-dir"``,
    or a library's :class:`~detkit.errors.Argument`).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise _refuse("{what} {path}: is a file, not a folder", what, path)
    _check_creatable(path, what, path)
    return path


def check_output_file(path: str | os.PathLike, what: str | Argument = "output file") -> Path:
    """Raise :class:`OutputPathError` unless ``path`` can be written as a file (it may exist).

    Nothing is created. ``what`` names the argument in the message (a tool's flag, ``"--out"``, or a
    library's :class:`~detkit.errors.Argument`).
    """
    path = Path(path)
    if path.is_dir():
        raise _refuse("{what} {path}: is a folder, expected a file path", what, path)
    if path.exists() and not os.access(path, os.W_OK):
        raise _refuse("{what} {path}: no permission to overwrite it", what, path)
    _check_creatable(path.parent, what, path)
    return path


def numbered_dir(base: str | os.PathLike, *, create: bool = False) -> Path:
    """The first of ``base``, ``base2``, ``base3``, ... that does not exist: the default output folder of
    one run, so that a later run never replaces its files.

    Args:
        base: the first name (``work_dirs/infer``).
        create: make the folder (and its parents), atomically: when another run made the same name
            first (two runs started together), the next free one is taken. Without it nothing is created.
    """
    base = Path(base)
    n = 1
    while True:
        path = base if n == 1 else base.with_name(f"{base.name}{n}")
        n += 1
        if os.path.lexists(path):
            continue
        if not create:
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir()  # one run wins a name; the loser goes on to the next
        except FileExistsError:
            continue
        return path


def _shown(path: str | os.PathLike) -> str:
    """``path`` as the user gave it, plus where it leads when a symlink makes that differ."""
    real = Path(path).resolve()
    return str(path) if Path(os.path.abspath(path)) == real else f"{path} (-> {real})"


def check_not_input(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None],
                    what: str | Argument = "output path", *,
                    names_from_inputs: bool = False) -> Path:
    """Raise :class:`OutputPathError` when writing ``out`` could destroy one of ``inputs``.

    Refused, with both paths named (each resolved through symlinks): ``out`` is an input (a file
    or a folder); ``out`` lies inside an input folder. With ``names_from_inputs`` (a tool that
    reads an input folder's own files, not its subfolders, and writes into the folder ``out``
    files named after them, as ``tools/infer.py`` draws ``photo.jpg`` into ``OUT/photo.jpg``): an
    input file directly inside ``out`` is refused too, and a subfolder of an input folder is
    allowed (nothing written there can replace an input). ``None`` inputs are skipped; nothing
    is created. Returns ``Path(out)``.
    """
    target = Path(out).resolve()
    for given in inputs:
        if given is None:
            continue
        source = Path(given).resolve()
        if target == source:
            kind = "folder" if source.is_dir() else "file"
            raise _refuse("{what} {path} is the input {kind} {given}: it would be overwritten; pick another "
                          "output path", what, _shown(out), kind=kind, given=_shown(given))
        if source.is_dir() and target.is_relative_to(source) and not names_from_inputs:
            raise _refuse("{what} {path} lies inside the input folder {given}; write the output outside it",
                          what, _shown(out), given=_shown(given))
        if names_from_inputs and source.parent == target and not source.is_dir():
            raise _refuse("{what} {path} holds the input {given}, whose output of the same name would replace "
                          "it; pick another output folder", what, _shown(out), given=_shown(given))
    return Path(out)


def config_input_paths(node: Any) -> list[Path]:
    """The existing files and folders a config node names (string values anywhere inside it, e.g. a
    dataset's ``ann_file``, ``img_dir``, ``root``): the inputs an output must not replace. A YOLO
    dataset's labels folder is one too when it is derived from ``img_dir`` (``images`` -> ``labels``).

    The current folder and its ancestors are left out (a data root of ``"."`` would make every
    relative output path "inside an input"); files there are still listed.
    """
    return [p for p in _named_paths(node) if not (p.is_dir() and Path.cwd().is_relative_to(p.resolve()))]


def _derived_label_dirs(node: Mapping) -> list[Path]:
    """The labels folders a ``YoloDataset`` call reads without naming them (no ``label_dir``)."""
    from detkit.data.yolo import YoloDataset, default_label_dir

    target = node.get("_target_")
    if not (isinstance(target, type) and issubclass(target, YoloDataset)) or node.get("label_dir"):
        return []
    img_dirs = node.get("img_dir")
    img_dirs = [img_dirs] if isinstance(img_dirs, (str, os.PathLike)) else img_dirs or []
    found = []
    for img_dir in img_dirs:
        with contextlib.suppress(ValueError, TypeError):  # no 'images' component: nothing derived
            label_dir = Path(default_label_dir(os.fspath(img_dir)))
            if label_dir.is_dir():
                found.append(label_dir)
    return found


def _named_paths(node: Any) -> list[Path]:
    found: list[Path] = []
    if isinstance(node, Mapping):
        values: Iterable[Any] = (v for k, v in node.items() if k not in ("_target_", "type"))
        found += _derived_label_dirs(node)
    elif isinstance(node, (list, tuple)):
        values = node
    elif isinstance(node, (str, os.PathLike)):
        text = os.fspath(node)
        return [Path(text)] if text and "\n" not in text and len(text) < 4096 and os.path.exists(text) else []
    else:
        return []
    for value in values:
        found += _named_paths(value)
    return found
