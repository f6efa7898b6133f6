"""The errors that mean "the user's input is wrong", by type.

Every tool turns a :class:`DetkitError` into one line, ``error: <message>``, on stderr and exit
status 2 (``--debug`` shows its traceback as well); any other exception, ``ValueError`` included,
is a bug in the library or in the caller's Python and keeps its traceback (exit status 1). So the
library raises a :class:`DetkitError` subclass only where the cause is something the user gave:
a config file or override, a dataset, a checkpoint, a work dir, an output path, an environment
without an optional package. Argument checks of a class or function called from Python stay
``ValueError`` / ``TypeError``; the config layer names the config key when it builds one from a
config and the check fails (:class:`ConfigError`).

A message names the file or key and the problem, and never a command-line flag: the tools add the
flag when they catch and re-raise (``raise ConfigError(f"--data {path}: {e}") from e``).

The concrete classes are ``ValueError`` too (as they were before they had a common base), so an
``except ValueError`` written for them keeps working; the CLI decides by ``DetkitError`` alone.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "DataError", "DetkitError", "OutputError", "UsageError",
           "WorkDirError", "error_name", "error_type"]


class DetkitError(Exception):
    """Base of the user-input errors: the CLI prints ``error: <message>`` and exits with status 2.

    Raise a subclass; the message names the file or key and says what is wrong with it.

    Args:
        *args: the message (as for ``Exception``).
        argument: the name of the function argument whose value would fix the problem (``"images"``:
            give the image folder), or None. A tool that took that argument from a flag adds the flag
            to its message (``pass --images DIR``); the library's message names no flag.
    """

    def __init__(self, *args: object, argument: str | None = None) -> None:
        super().__init__(*args)
        self.argument = argument


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


# The classes by name, for errors that cross processes as (name, message) (distributed ranks).
_BY_NAME: dict[str, type[DetkitError]] = {cls.__name__: cls for cls in (
    DetkitError, ConfigError, DataError, CheckpointError, WorkDirError, OutputError, UsageError)}


def error_type(name: str) -> type[DetkitError] | None:
    """The :class:`DetkitError` class called ``name`` (one of this module's), or None.

    For an error sent from another process as its class name and message: the receiver raises
    ``error_type(name)(message)`` when this is not None, and treats the error as a bug otherwise.
    """
    return _BY_NAME.get(name)


def error_name(error: BaseException) -> str | None:
    """The name of the class in this module that ``error`` is an instance of (the most specific
    one: ``"ConfigError"`` for a :class:`detkit.schema.SettingError`), or None for any other error."""
    for cls in type(error).__mro__:
        if cls.__name__ in _BY_NAME and _BY_NAME[cls.__name__] is cls:
            return cls.__name__
    return None
