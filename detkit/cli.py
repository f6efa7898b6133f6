"""The exit-status policy of the command-line tools in ``tools/``.

A tool's ``main(argv)`` returns 0 when it did its job, 2 when the user's input is wrong (a config
mistake or a bad argument / file: :class:`~detkit.config.ConfigError` or ``ValueError``) and 1 when
the job itself failed (the tool names which errors mean that); either way ``error: <message>`` goes
to stderr instead of a traceback. Argument parsing may run inside the job: argparse's own exit
(2 for a usage mistake, 0 for ``--help``) becomes the returned status, so ``main(argv)`` returns
instead of raising ``SystemExit``. A tool with statuses of its own (training: 1 diverged,
128 + signal when stopped) maps its exceptions with ``handlers``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from detkit.config import ConfigError

__all__ = ["USAGE_ERRORS", "run_cli"]

USAGE_ERRORS: tuple[type[BaseException], ...] = (ConfigError, ValueError)


def run_cli(job: Callable[[], Any], failures: tuple[type[BaseException], ...] = (),
            handlers: Mapping[type[BaseException], Callable[[Any], int]] | None = None) -> int:
    """Run ``job()`` and map its outcome to an exit status.

    Args:
        job: the tool's work (its return value is ignored).
        failures: exceptions meaning the job failed: ``error: <message>``, status 1.
        handlers: ``{exception type: handler(error) -> status}`` for a tool's own statuses; the
            handler prints what it wants. Checked before ``failures``, after the usage errors.

    Returns:
        0 done; 2 a usage error (``error: <message>`` on stderr) or argparse's usage exit; 1 a
        declared failure; a handler's status; the code of a ``SystemExit`` raised inside the job.
        Any other exception propagates with its traceback (a bug, not a user mistake).
    """
    try:
        job()
    except SystemExit as e:  # argparse: usage mistake (2) or --help (0); its message is already printed
        if e.code is None or isinstance(e.code, int):
            return int(e.code or 0)
        print(f"error: {e.code}", file=sys.stderr)
        return 1
    except USAGE_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BaseException as e:
        for kind, handle in (handlers or {}).items():
            if isinstance(e, kind):
                return handle(e)
        if isinstance(e, failures):
            print(f"error: {e}", file=sys.stderr)
            return 1
        raise
    return 0
