"""The exit-status policy of the command-line tools in ``detkit/tools/``.

A tool's ``main(argv)`` returns 0 when it did its job, 2 when the user's input is wrong (a
:class:`~detkit.errors.DetkitError`: a config, data, checkpoint, work-dir or output-path mistake)
and 1 when the job itself failed (the tool names which errors mean that); either way
``error: <message>`` goes to stderr instead of a traceback. Any other exception, ``ValueError``
included, is a bug and keeps its traceback (status 1 from Python). ``--debug`` (every tool's
parser is :class:`ArgumentParser`; ``detkit --debug COMMAND ...``; or ``DETKIT_DEBUG=1``) prints
the traceback of a user error or a declared failure too, before its ``error:`` line; the status
stays the same.

A message that names an argument as a remedy (:class:`~detkit.errors.ArgumentMessage`: the library
writes ``resume='auto'``, ``work_dir``) is printed with the tool's flags instead (``--resume``,
``--work-dir``): :func:`cli_message`, argparse's ``--dest-name`` convention unless the tool passes
``flags``.

Argument parsing may run inside the job: argparse's own exit (2 for a usage mistake, 0 for
``--help``) becomes the returned status, so ``main(argv)`` returns instead of raising
``SystemExit``. A tool with statuses of its own (training: 1 diverged, 128 + signal when stopped)
maps its exceptions with ``handlers``.

A reader that stops early (``detkit configs | head -2``) closes the pipe the tool writes to: the
tool stops quietly with status 141 (128 + SIGPIPE, what a shell reports for a Unix tool the pipe
ended), its standard output pointed at ``os.devnull`` as Python's ``signal`` documentation advises
(so the flush at exit raises nothing). A ``BrokenPipeError`` from anything but standard output
keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from detkit.errors import Argument, ArgumentMessage, DetkitError

__all__ = ["CLOSED_STDOUT_STATUS", "DEBUG_ENV", "ArgumentParser", "cli_message", "debug_enabled", "debugging",
           "flag_of", "run_cli"]

DEBUG_ENV = "DETKIT_DEBUG"  # set to 1 for --debug in every tool (and in processes they start)
_debug = [False]  # set by --debug while a tool runs (run_cli restores it when the tool returns)
CLOSED_STDOUT_STATUS = 141  # 128 + SIGPIPE: the reader of the tool's output closed it (| head)


def debug_enabled() -> bool:
    """Whether ``--debug`` was given (to this tool or to ``detkit``) or ``DETKIT_DEBUG`` is set."""
    return _debug[0] or os.environ.get(DEBUG_ENV, "") not in ("", "0")


@contextlib.contextmanager
def debugging(on: bool = True) -> Iterator[None]:
    """Within the block, user errors show their traceback (``detkit --debug COMMAND``)."""
    previous, _debug[0] = _debug[0], on
    try:
        yield
    finally:
        _debug[0] = previous


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with the ``--debug`` flag every tool has; parsing it turns
    :func:`debug_enabled` on for the rest of the tool's run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true",
                          help="on a user error (exit status 2), print its traceback too")

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        parsed, rest = super().parse_known_args(args, namespace)
        if getattr(parsed, "debug", False):
            _debug[0] = True
        return parsed, rest


def flag_of(argument: Argument, flags: Mapping[str, str] | None = None) -> str:
    """The flag that gives ``argument`` on a command line: ``flags[name]`` when the tool names one,
    else argparse's convention (``work_dir`` -> ``--work-dir``), followed by its metavar if any."""
    flag = (flags or {}).get(argument.name) or "--" + argument.name.replace("_", "-")
    return f"{flag} {argument.metavar}" if argument.metavar else flag


def cli_message(error: BaseException, flags: Mapping[str, str] | None = None) -> str:
    """``error``'s message as a tool prints it: the arguments an
    :class:`~detkit.errors.ArgumentMessage` names spelled as flags (:func:`flag_of`); any other
    error's message as it is."""
    if isinstance(error, ArgumentMessage) and error.values is not None:
        return error.render(lambda argument: flag_of(argument, flags))
    return str(error)


def _report(error: BaseException, flags: Mapping[str, str] | None = None) -> None:
    """``error: <message>`` on stderr, after the traceback when debugging."""
    if debug_enabled():
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    print(f"error: {cli_message(error, flags)}", file=sys.stderr)


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone (POLLERR on its write end); where
    ``poll`` is missing (Windows) any ``BrokenPipeError`` counts as that."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by an object without a descriptor
        return False
    if not hasattr(select, "poll"):
        return True
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def _leave_closed_stdout() -> int:
    """Point standard output at ``os.devnull`` (Python's flush at exit then writes nowhere) and
    return :data:`CLOSED_STDOUT_STATUS`."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return CLOSED_STDOUT_STATUS


def run_cli(job: Callable[[], Any], failures: tuple[type[BaseException], ...] = (),
            handlers: Mapping[type[BaseException], Callable[[Any], int]] | None = None,
            flags: Mapping[str, str] | None = None) -> int:
    """Run ``job()`` and map its outcome to an exit status.

    Args:
        job: the tool's work (its return value is ignored).
        failures: exceptions meaning the job failed: ``error: <message>``, status 1.
        handlers: ``{exception type: handler(error) -> status}`` for a tool's own statuses; the
            handler prints what it wants. Checked before ``failures``, after the user errors.
        flags: ``{argument: flag}`` for the tool's flags that do not follow argparse's convention
            (:func:`cli_message`).

    Returns:
        0 done; 2 a :class:`~detkit.errors.DetkitError` (``error: <message>`` on stderr) or
        argparse's usage exit; 1 a declared failure; a handler's status; the code of a
        ``SystemExit`` raised inside the job; 141 when the reader of standard output closed it
        (nothing printed). Any other exception propagates with its traceback (a bug, not a user
        mistake).
    """
    with debugging(_debug[0]):  # a --debug parsed inside the job ends with it
        try:
            status = _run(job, failures, handlers, flags)
            sys.stdout.flush()  # inside the try: a closed pipe shows here, not at Python's exit
        except BrokenPipeError:
            if not _stdout_closed():
                raise
            return _leave_closed_stdout()
    return status


def _run(job: Callable[[], Any], failures: tuple[type[BaseException], ...],
         handlers: Mapping[type[BaseException], Callable[[Any], int]] | None,
         flags: Mapping[str, str] | None) -> int:
    """:func:`run_cli`'s statuses, a closed standard output aside."""
    try:
        job()
    except SystemExit as e:  # argparse: usage mistake (2) or --help (0); its message is already printed
        if e.code is None or isinstance(e.code, int):
            return int(e.code or 0)
        print(f"error: {e.code}", file=sys.stderr)
        return 1
    except DetkitError as e:
        _report(e, flags)
        return 2
    except BaseException as e:
        for kind, handle in (handlers or {}).items():
            if isinstance(e, kind):
                return handle(e)
        if isinstance(e, failures):
            _report(e, flags)
            return 1
        raise
    return 0
