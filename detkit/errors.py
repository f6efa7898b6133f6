"""The errors that mean "the user's input is wrong", by type.

Every tool turns a :class:`DetkitError` into one line, ``error: <message>``, on stderr and exit
status 2 (``--debug`` shows its traceback as well); any other exception, ``ValueError`` included,
is a bug in the library or in the caller's Python and keeps its traceback (exit status 1). So the
library raises a :class:`DetkitError` subclass only where the cause is something the user gave:
a config file or override, a dataset, a checkpoint, a work dir, an output path, an environment
without an optional package. Argument checks of a class or function called from Python stay
``ValueError`` / ``TypeError``; the config layer names the config key when it builds one from a
config and the check fails (:class:`ConfigError`).

A message names the file or key and the problem, and never a command-line flag: where an argument
fixes it, the message names the argument as below and each reader sees its own spelling of it.

Remedies that name arguments. Where a message says which argument fixes the problem ("continue it
with ``resume``, pick another ``work_dir``, or pass ``overwrite``"), the library writes the
argument as a field of a ``str.format`` template and its own data as ``values``
(:class:`ArgumentMessage`, the base of :class:`DetkitError`)::

    raise WorkDirError("work dir {path} holds an earlier run; continue it with {resume:'auto'}, "
                       "pick another {work_dir}, or pass {overwrite:True} to delete it", values={"path": work_dir})

A field named in ``values`` is that value, inserted as it is (a path with braces stays literal); any
other field is an argument, ``{name}`` or ``{name:value}``, spelled for the reader by
:meth:`ArgumentMessage.render`: ``str(error)`` spells it for Python (``resume='auto'``,
``work_dir``, ``overwrite=True``: the names a caller passes to ``Trainer(...)``), and every tool
(:func:`detkit.cli.cli_message`, in ``run_cli``) as its flag (``--resume``, ``--work-dir``,
``--overwrite``: argparse's ``--dest-name`` convention, or the tool's ``flags``). A value that is an
:class:`Argument` is spelled the same way (``values={"what": Argument("work_dir")}``; with a Python
spelling of its own or a metavar for the flag). That is the one way a library message names an
argument in its text; a tool adds nothing to it (a tool that re-raises one with a prefix of its own
writes ``cli_message(error)``, not ``str(error)``, so that its flags stay flags).

The concrete classes are ``ValueError`` too (as they were before they had a common base), so an
``except ValueError`` written for them keeps working; the CLI decides by ``DetkitError`` alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

__all__ = ["Argument", "ArgumentMessage", "CheckpointError", "ConfigError", "DataError", "DetkitError", "OutputError",
           "Spelling", "UsageError", "WorkDirError", "python_spelling"]

# How an argument is written for a reader (Python: python_spelling; a tool: its flag).
Spelling = Callable[["Argument"], str]


@dataclasses.dataclass(frozen=True)
class Argument:
    """A function argument named in a message (:class:`ArgumentMessage`).

    Attributes:
        name: the Python argument (``"work_dir"``); a tool's flag for it is ``--work-dir`` unless the
            tool says otherwise.
        value: the value that fixes the problem, as Python text (``"True"``, ``"'auto'"``), or "".
        python: how a Python caller gives it when ``name=value`` does not say it
            (``"adopt_dataset(cfg, PATH)"``), or "".
        metavar: what follows the flag on a command line (``"PATH"``), or "".
    """

    name: str
    value: str = ""
    python: str = ""
    metavar: str = ""

    def __format__(self, spec: str) -> str:
        return python_spelling(self)

    def __str__(self) -> str:
        return python_spelling(self)


def python_spelling(argument: Argument) -> str:
    """``argument`` as a Python caller writes it: ``name=value`` (``overwrite=True``), ``name`` without
    a value (``work_dir``), or its own ``python`` text."""
    if argument.python:
        return argument.python
    return f"{argument.name}={argument.value}" if argument.value else argument.name


class _Spelled:
    """An argument field of a template: formats as ``spell(argument)``; a format spec is its value."""

    def __init__(self, argument: Argument, spell: Spelling) -> None:
        self.argument, self.spell = argument, spell

    def __format__(self, spec: str) -> str:
        return self.spell(dataclasses.replace(self.argument, value=spec) if spec else self.argument)


class _Fields(dict[str, object]):
    """A template's fields: ``values`` (an :class:`Argument` among them spelled), any other name an
    argument."""

    def __init__(self, values: Mapping[str, object], spell: Spelling) -> None:
        super().__init__((k, _Spelled(v, spell) if isinstance(v, Argument) else v) for k, v in values.items())
        self.spell = spell

    def __missing__(self, key: str) -> _Spelled:
        return _Spelled(Argument(key), self.spell)


class ArgumentMessage(Exception):
    """An exception whose message may name the arguments that fix it, spelled for its reader.

    Args:
        *args: the message (as for ``Exception``); with ``values``, a ``str.format`` template whose
            fields are the ``values`` and, for any other name, an argument (``{overwrite:True}``).
        values: the template's data (paths, counts), inserted as they are; None: a plain message.

    ``str(error)`` is :meth:`render` with :func:`python_spelling`; a tool renders it with its flags
    (:func:`detkit.cli.cli_message`). The error crosses processes (pickled) with its template.
    """

    def __init__(self, *args: object, values: Mapping[str, object] | None = None) -> None:
        super().__init__(*args)
        self.values = dict(values) if values is not None else None

    def render(self, spell: Spelling = python_spelling) -> str:
        """The message with each argument written by ``spell`` (a plain message as it is)."""
        if getattr(self, "values", None) is None or len(self.args) != 1 or not isinstance(self.args[0], str):
            return super().__str__()
        return self.args[0].format_map(_Fields(self.values or {}, spell))

    def __str__(self) -> str:
        return self.render()

    def __repr__(self) -> str:
        if getattr(self, "values", None) is None:
            return super().__repr__()
        return f"{type(self).__name__}({self.render()!r})"

    def __reduce__(self) -> tuple[Callable[..., ArgumentMessage], tuple[object, ...]]:
        # rebuilt without calling the class's __init__, whose arguments may differ from args
        # (SettingError(key, message)): the class, args and attributes cross processes as they are
        return _rebuild, (type(self), self.args, dict(self.__dict__))


def _rebuild(cls: type[ArgumentMessage], args: tuple[object, ...], state: dict[str, object]) -> ArgumentMessage:
    """An unpickled :class:`ArgumentMessage`: ``cls`` with ``args`` and attributes ``state``."""
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class DetkitError(ArgumentMessage):
    """Base of the user-input errors: the CLI prints ``error: <message>`` and exits with status 2.

    Raise a subclass; the message names the file or key and says what is wrong with it.

    Args:
        *args: the message (as for ``Exception``; a template with ``values``: :class:`ArgumentMessage`).
        values: the data of a message that names the arguments fixing it (:class:`ArgumentMessage`:
            ``"{where}: no class names found; pass {names}"``), or None for a plain message.
    """


class ConfigError(DetkitError, ValueError):
    """A mistake in a config file or an override: a missing file, a syntax error, an unknown key,
    a value of the wrong type or out of range (also when a component built from the config rejects
    its arguments: the message names the config key). The message names the file and the key."""


class DataError(DetkitError, ValueError):
    """A dataset that cannot be used: a missing or malformed data.yaml, COCO json or label file, an
    image folder that is absent or empty, class ids out of range. The message names the file."""


class CheckpointError(DetkitError, ValueError):
    """A checkpoint file that cannot be used: missing, truncated, corrupt, refused as unsafe, or
    made for another model or config. The message names the file."""


class WorkDirError(DetkitError, ValueError):
    """A work dir that cannot be used: another run holds it, it holds an earlier run (and neither
    resuming nor overwriting was asked for), or there is nothing in it to resume."""


class OutputError(DetkitError, ValueError):
    """An output path that cannot be written: it is an input, a folder where a file is wanted,
    not writable, or the disk filled up while writing (the previous file at the path is intact)."""


class UsageError(DetkitError, ValueError):
    """A command-line argument, or a combination of them, that a tool refuses beyond what argparse
    checks (``--img-dir`` without ``--data``). Raised by the tools only; the message names the flag."""
