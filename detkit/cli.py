"""The exit-status policy of the command-line tools in ``tools/``.

A tool's ``main(argv)`` returns 0 when it did its job, 2 when the user's input is wrong (a config
mistake or a bad argument / file: :class:`~detkit.config.ConfigError` or ``ValueError``) and 1 when
the job itself failed (the tool names which errors mean that); either way ``error: <message>`` goes
to stderr instead of a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from detkit.config import ConfigError

__all__ = ["USAGE_ERRORS", "run_cli"]

USAGE_ERRORS: tuple[type[BaseException], ...] = (ConfigError, ValueError)


def run_cli(job: Callable[[], Any], failures: tuple[type[BaseException], ...] = ()) -> int:
    """Run ``job()`` and map its outcome to an exit status (0, 2 for usage errors, 1 for ``failures``)."""
    try:
        job()
    except USAGE_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except failures as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
