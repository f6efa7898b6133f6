"""A reader that closes the tool's output early (``detkit configs | head -2``): a quiet exit with
status 141 (128 + SIGPIPE), no traceback, for the ``detkit`` command and the tools/ shims alike."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from detkit.cli import CLOSED_STDOUT_STATUS, run_cli

ROOT = Path(__file__).resolve().parents[1]


def _run_with_reader_gone(command: list[str], cwd: Path) -> tuple[int, str]:
    """Run ``command`` with its stdout a pipe whose reader is closed before the command writes."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader stops before the first line (head -0): every write is a broken pipe
    err = proc.stderr.read().decode()
    return proc.wait(timeout=120), err


@pytest.mark.parametrize("args", [["-m", "detkit", "configs"], ["-m", "detkit", "--help"],
                                  ["-m", "detkit", "print-config", "yolov8n_tal.py"],
                                  [str(ROOT / "tools" / "print_config.py"), "yolov8n_tal.py"]],
                         ids=["configs", "usage", "subcommand", "tools-shim"])
def test_a_closed_stdout_ends_quietly_with_status_141(args: list[str], tmp_path: Path) -> None:
    status, err = _run_with_reader_gone([sys.executable, *args], tmp_path)
    assert (status, err) == (CLOSED_STDOUT_STATUS, "")
    assert CLOSED_STDOUT_STATUS == 128 + 13  # SIGPIPE


def test_a_broken_pipe_elsewhere_keeps_its_traceback() -> None:
    def job() -> None:
        raise BrokenPipeError(32, "a subprocess's pipe, not our stdout")

    with pytest.raises(BrokenPipeError, match="subprocess"):
        run_cli(job)
