import pytest

from detkit.cli import run_cli
from detkit.config import ConfigError


def _raise(error: BaseException):
    def job():
        raise error
    return job


def test_exit_statuses_and_messages(capsys):
    assert run_cli(lambda: None) == 0
    assert run_cli(_raise(ConfigError("cfg.py: unknown key 'x'"))) == 2
    assert capsys.readouterr().err == "error: cfg.py: unknown key 'x'\n"
    assert run_cli(_raise(ValueError("bad image"))) == 2
    assert run_cli(_raise(RuntimeError("parity")), failures=(RuntimeError,)) == 1
    assert capsys.readouterr().err == "error: bad image\nerror: parity\n"
    with pytest.raises(RuntimeError):  # not declared a failure: a real bug keeps its traceback
        run_cli(_raise(RuntimeError("bug")))
