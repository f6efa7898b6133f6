import pytest

from detkit.cli import ArgumentParser, debug_enabled, debugging, run_cli
from detkit.config import ConfigError
from detkit.errors import CheckpointError, DataError, DetkitError, OutputError, UsageError, WorkDirError


def _raise(error: BaseException):
    def job():
        raise error
    return job


def test_exit_statuses_and_messages(capsys):
    assert run_cli(lambda: None) == 0
    assert run_cli(_raise(ConfigError("cfg.py: unknown key 'x'"))) == 2
    assert capsys.readouterr().err == "error: cfg.py: unknown key 'x'\n"
    assert run_cli(_raise(RuntimeError("parity")), failures=(RuntimeError,)) == 1
    assert capsys.readouterr().err == "error: parity\n"
    with pytest.raises(RuntimeError):  # not declared a failure: a real bug keeps its traceback
        run_cli(_raise(RuntimeError("bug")))


@pytest.mark.parametrize("kind", [ConfigError, DataError, CheckpointError, WorkDirError, OutputError, UsageError,
                                  DetkitError])
def test_every_user_error_is_one_line_and_status_2(kind, capsys):
    assert run_cli(_raise(kind("data.yaml: names is empty"))) == 2
    assert capsys.readouterr().err == "error: data.yaml: names is empty\n"


@pytest.mark.parametrize("error", [ValueError("bad image"), TypeError("x"), KeyError("k"), FileNotFoundError("f")])
def test_a_plain_valueerror_is_a_bug_now_not_a_user_error(error, capsys):
    """Errors by type: only a DetkitError is the user's; a ValueError from deep in the library propagates."""
    with pytest.raises(type(error)):
        run_cli(_raise(error))
    assert capsys.readouterr().err == ""


def test_debug_shows_the_traceback_of_a_user_error_with_the_same_status(capsys):
    def job():
        ArgumentParser().parse_args(["--debug"])
        raise DataError("labels/a.txt: bad line")

    assert run_cli(job) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):\n") and "in job\n" in err
    assert err.endswith("detkit.errors.DataError: labels/a.txt: bad line\nerror: labels/a.txt: bad line\n")
    assert not debug_enabled()  # --debug ends with the tool's run
    assert run_cli(_raise(DataError("again"))) == 2
    assert capsys.readouterr().err == "error: again\n"


def test_debug_from_the_environment_and_for_declared_failures(monkeypatch, capsys):
    monkeypatch.setenv("DETKIT_DEBUG", "1")
    assert run_cli(_raise(RuntimeError("parity")), failures=(RuntimeError,)) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("RuntimeError: parity\nerror: parity\n")
    monkeypatch.setenv("DETKIT_DEBUG", "0")
    assert not debug_enabled()
    with debugging():
        assert debug_enabled()
    assert not debug_enabled()


def test_every_tool_parser_has_debug():
    parser = ArgumentParser(prog="t")
    assert parser.parse_args([]).debug is False
    assert "--debug" in parser.format_help()
