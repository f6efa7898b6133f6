"""Errors by type (issue 30.4): a DetkitError is the user's (one ``error:`` line, exit status 2), every other
exception is a bug and keeps its traceback (exit status 1); ``--debug`` shows a user error's traceback too."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from detkit import errors
from detkit.__main__ import main as detkit_main
from detkit.config import L, instantiate
from detkit.errors import CheckpointError, ConfigError, DataError, DetkitError, OutputError, WorkDirError

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "tests" / "engine" / "configs" / "shapes_tiny.py"


# ----- the classes --------------------------------------------------------------------------------


def test_the_user_errors_share_one_base_and_stay_valueerrors():
    from detkit.engine.output_paths import OutputPathError
    from detkit.extras import MissingExtraError
    from detkit.io import OutputWriteError
    from detkit.models.convert.ultralytics import ConversionError
    from detkit.schema import SettingError

    for cls in (ConfigError, DataError, CheckpointError, WorkDirError, OutputError, OutputPathError,
                OutputWriteError, MissingExtraError, SettingError, ConversionError):
        assert issubclass(cls, DetkitError) and issubclass(cls, ValueError), cls
    assert not issubclass(ValueError, DetkitError)


def _user_errors() -> list[DetkitError]:
    from detkit.engine.output_paths import OutputPathError
    from detkit.extras import MissingExtraError
    from detkit.io import OutputWriteError
    from detkit.schema import SettingError

    return [ConfigError("m"), DataError("m"), CheckpointError("m"), WorkDirError("m"), OutputError("m"),
            errors.UsageError("m"), OutputPathError("m"), OutputWriteError("m"), MissingExtraError("m", "onnx"),
            SettingError("train.epochs", "must be >= 1"),  # an __init__ whose arguments are not its args
            WorkDirError("{path} is in use; pick another {work_dir}", values={"path": "/w/{x}"})]


@pytest.mark.parametrize("error", _user_errors(), ids=lambda e: type(e).__name__)
def test_an_error_crosses_processes_with_its_type(error):
    """A rank's verdict reaches the others pickled: the same class, message, template and attributes."""
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error) and again.args == error.args and vars(again) == vars(error)
    assert str(again) == str(error) and repr(again) == repr(error)


class _Picky:
    def __init__(self, k: int = 1) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")


class _Reads:
    def __init__(self) -> None:
        raise DataError("labels/a.txt: bad line")


def test_a_constructor_valueerror_from_a_config_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError) as e:
        instantiate(dict(head=dict(assigner=L(_Picky)(k=0))), "model")
    assert str(e.value) == "model.head.assigner: _Picky(k=0): k must be >= 1, got 0"
    assert isinstance(e.value.__cause__, ValueError)  # --debug shows where it was raised
    with pytest.raises(ValueError, match="k must be") as e:  # called from Python: the library's own error
        _Picky(k=0)
    assert not isinstance(e.value, DetkitError)
    with pytest.raises(DataError, match="^labels/a.txt: bad line$"):  # a user error passes through as it is
        instantiate(L(_Reads)(), "data.train.dataset")


# ----- through `detkit train` ---------------------------------------------------------------------


def _train(argv: list[str], capsys) -> tuple[int, str]:
    code = detkit_main(["train", str(CFG), *argv])
    return code, capsys.readouterr().err


def test_a_bad_config_value_is_one_line_naming_the_key(tmp_path, capsys):
    code, err = _train(["--work-dir", str(tmp_path / "w"),
                        "--cfg-options", "model.head.loss.assigner=ATSSAssigner(topk=0)"], capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: model.head.loss.assigner: ATSSAssigner(topk=0): ")


def test_a_bad_data_file_is_one_line_naming_the_file(tmp_path, capsys):
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: []\n")
    code, err = _train(["--work-dir", str(tmp_path / "w"), "--data", str(tmp_path / "data.yaml")], capsys)
    assert (code, err) == (2, f"error: --data {tmp_path / 'data.yaml'}: names is empty\n")


def test_a_bad_checkpoint_is_one_line_naming_the_file(tmp_path, capsys):
    (tmp_path / "w.pth").write_bytes(b"not a checkpoint")
    code, err = _train(["--work-dir", str(tmp_path / "w"), "--load-from", str(tmp_path / "w.pth")], capsys)
    lines = [line for line in err.splitlines() if "INFO" not in line]  # the trainer logs its set-up to stderr
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'w.pth'}: "), err
    assert "Traceback" not in err


def test_debug_shows_the_traceback_of_a_user_error_with_status_2(tmp_path, capsys):
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: []\n")
    for argv in (["train", str(CFG), "--debug"], ["--debug", "train", str(CFG)]):
        code = detkit_main([*argv, "--work-dir", str(tmp_path / "w"), "--data", str(tmp_path / "data.yaml")])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("Traceback (most recent call last):"), err
        assert "detkit.errors.DataError: " in err and "The above exception was the direct cause" in err
        assert err.endswith(f"error: --data {tmp_path / 'data.yaml'}: names is empty\n")
    code, err = _train(["--work-dir", str(tmp_path / "w"), "--data", str(tmp_path / "data.yaml")], capsys)
    assert code == 2 and "Traceback" not in err  # --debug lasted one run


_BUG = """
import sys
from detkit.models import detector
def check_input(self, images):
    raise ValueError("a shape check deep in the library failed")
detector.Detector.check_input = check_input
from detkit.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_library_valueerror_during_train_keeps_its_traceback_and_exits_1(tmp_path):
    out = subprocess.run([sys.executable, "-c", _BUG, "train", str(CFG), "--work-dir", str(tmp_path / "w")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "Traceback (most recent call last):" in out.stderr
    assert out.stderr.rstrip().endswith("ValueError: a shape check deep in the library failed")
    assert "\nerror: " not in out.stderr and not out.stderr.startswith("error: ")


def test_the_library_names_the_argument_and_the_tool_its_flag(tmp_path, capsys):
    """No flag in a library message: it names the argument that fixes it, a tool prints that argument's flag."""
    from detkit.data.checks import find_sources
    from tests.fixtures.tools import load_tool

    (tmp_path / "images").mkdir()
    with pytest.raises(DataError) as e:
        find_sources(str(tmp_path / "images"), "yolo")
    said = f"{tmp_path / 'images'}: no class names found (names.txt or data.yaml); pass "
    assert str(e.value) == said + "names"
    assert load_tool("check_dataset").main([str(tmp_path / "images"), "--format", "yolo"]) == 2
    assert capsys.readouterr().err == f"error: {said}--names FILE\n"
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DataError, match="cannot tell the dataset format from the path; pass fmt$"):
        find_sources(str(tmp_path / "a.txt"))
    assert load_tool("check_dataset").main([str(tmp_path / "a.txt")]) == 2  # fmt's flag is --format
    assert capsys.readouterr().err == (f"error: {tmp_path / 'a.txt'}: cannot tell the dataset format from the path; "
                                       "pass --format (coco, yolo, voc)\n")

    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "train.json").write_text('{"images": [{"id": 1, "file_name": "x.jpg", "width": 4, '
                                                 '"height": 4}], "annotations": [], "categories": [{"id": 1, '
                                                 '"name": "a"}]}')
    assert detkit_main(["train", str(CFG), "--work-dir", str(tmp_path / "w"),
                        "--data", str(tmp_path / "ann" / "train.json")]) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after a warning: no val json beside it
    assert err.startswith(f"error: --data {tmp_path / 'ann' / 'train.json'}: image folder not found (tried ")
    assert err.endswith("); pass --img-dir DIR")
