"""Library messages name the Python arguments that fix a user error; the tools print their flags instead
(detkit.errors.ArgumentMessage, detkit.cli.cli_message; issue 30 item 4)."""

from __future__ import annotations

import ast
import pickle
import re
from pathlib import Path

import pytest
import torch

from detkit.cli import cli_message, flag_of, run_cli
from detkit.config import ConfigDict, load_config
from detkit.engine.builders import build_dataset
from detkit.engine.output_paths import OutputPathError, check_not_input, check_output_dir
from detkit.engine.train_utils import resolve_device
from detkit.engine.workdir import config_dump_path
from detkit.errors import Argument, CheckpointError, ConfigError, WorkDirError, python_spelling

ROOT = Path(__file__).resolve().parents[1]
CFG = str(ROOT / "configs" / "shapes_yolov8_tal.py")


def test_arguments_are_spelled_for_python_and_as_flags_and_values_stay_literal():
    error = WorkDirError("work dir {path} ({n} files); continue it with {resume:'auto'}, pick another {work_dir}, "
                         "or pass {overwrite:True}", values={"path": "/data/{x}/run", "n": 3})
    assert str(error) == ("work dir /data/{x}/run (3 files); continue it with resume='auto', pick another work_dir, "
                          "or pass overwrite=True")
    assert cli_message(error) == ("work dir /data/{x}/run (3 files); continue it with --resume, pick another "
                                  "--work-dir, or pass --overwrite")
    assert cli_message(error, {"work_dir": "-w"}) == ("work dir /data/{x}/run (3 files); continue it with --resume, "
                                                      "pick another -w, or pass --overwrite")
    assert repr(error) == f"WorkDirError({str(error)!r})"


def test_a_plain_message_is_not_a_template():
    error = ConfigError("cfg.py: {resume} is not a key")  # no values: braces are text
    assert str(error) == cli_message(error) == "cfg.py: {resume} is not a key"
    assert repr(error) == "ConfigError('cfg.py: {resume} is not a key')"
    assert cli_message(ValueError("a {bug}")) == "a {bug}"


def test_an_argument_value_with_its_own_python_spelling_and_metavar():
    data = Argument("source", python="adopt_dataset(cfg, PATH)", metavar="PATH")
    assert python_spelling(data) == f"{data}" == "adopt_dataset(cfg, PATH)"
    assert flag_of(data) == "--source PATH" and flag_of(data, {"source": "--data"}) == "--data PATH"
    assert python_spelling(Argument("load_from")) == "load_from"
    assert python_spelling(Argument("overwrite", "True")) == "overwrite=True"


def test_the_template_crosses_processes():
    """claim_work_dir sends rank 0's verdict to the other ranks pickled: the tool there prints the same flags."""
    error = CheckpointError("{path}: use {load_from}", values={"path": "a.pth"})
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is CheckpointError and again.values == {"path": "a.pth"}
    assert (str(again), cli_message(again)) == ("a.pth: use load_from", "a.pth: use --load-from")


def test_run_cli_prints_the_flags(capsys):
    def job():
        raise WorkDirError("work dir {path} is in use; pick another {work_dir}", values={"path": "w"})

    assert run_cli(job) == 2
    assert capsys.readouterr().err == "error: work dir w is in use; pick another --work-dir\n"
    assert run_cli(job, flags={"work_dir": "--out"}) == 2
    assert capsys.readouterr().err == "error: work dir w is in use; pick another --out\n"


def test_the_engine_messages_name_arguments(tmp_path):
    (tmp_path / "config.py").write_text("x = 1\n")
    (tmp_path / "config.dump.py").write_text("y = 2\n")
    with pytest.raises(WorkDirError) as info:
        config_dump_path(tmp_path)
    assert str(info.value).endswith("; move one of them or pick another work_dir")
    assert cli_message(info.value).endswith("; move one of them or pick another --work-dir")

    with pytest.raises(ConfigError) as info:
        build_dataset(ConfigDict(data={}), "val")
    assert str(info.value) == ("config has no data.val.dataset; add data=dict(val=dict(dataset=L(...)(...))) or give "
                               "adopt_dataset(cfg, PATH) (a dataset with a val split)")
    assert cli_message(info.value) == ("config has no data.val.dataset; add data=dict(val=dict(dataset=L(...)(...))) "
                                       "or give --data PATH (a dataset with a val split)")

    a_file = tmp_path / "f"
    a_file.write_text("x")
    with pytest.raises(OutputPathError) as info:
        check_output_dir(a_file, Argument("work_dir"))
    assert (str(info.value), cli_message(info.value)) == (f"work_dir {a_file}: is a file, not a folder",
                                                          f"--work-dir {a_file}: is a file, not a folder")
    with pytest.raises(OutputPathError) as info:  # a tool's own wording is kept as it is
        check_not_input(a_file, [a_file], "DST")
    assert cli_message(info.value) == str(info.value) == (f"DST {a_file} is the input file {a_file}: it would be "
                                                          "overwritten; pick another output path")
    with pytest.raises(OutputPathError, match=f"^output path {a_file} is the input file"):  # the default names no flag
        check_not_input(a_file, [a_file])


def test_the_config_and_device_messages_name_arguments(monkeypatch):
    """An override is load_config's ``overrides`` (a tool's --cfg-options); the device is ``device``."""
    with pytest.raises(ConfigError) as info:
        load_config(CFG, ["data=/x/{a}.yaml"])
    assert str(info.value) == (f"{CFG}: data: expected a section (a dict of settings), got '/x/{{a}}.yaml' (str); "
                               "train or evaluate on a dataset file with adopt_dataset(cfg, PATH) "
                               "(from the override data=/x/{a}.yaml)")
    assert cli_message(info.value) == (f"{CFG}: data: expected a section (a dict of settings), got '/x/{{a}}.yaml' "
                                       "(str); train or evaluate on a dataset file with --data PATH "
                                       "(from --cfg-options data=/x/{a}.yaml)")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"^device 'cuda:1' requested but CUDA is not available \(") as info:
        resolve_device("cuda:1")
    assert str(info.value).endswith("); use device='cpu'") and cli_message(info.value).endswith("); use --device cpu")


ENGINE = ["workdir", "run_checkpoints", "weights", "builders", "output_paths", "trainer"]
# Library modules outside the engine whose messages once named flags (the config layer, the data checks).
LIBRARY = ["config.py", "config_checks.py", "schema.py", "lazy.py", "engine/train_utils.py", "data/checks.py",
           "data/sources.py"]
_EXCEPTION = re.compile(r"(Error|Interrupted|Diverged|Aborted|_refuse)$")


def _raised_texts(path: Path) -> list[str]:
    """The string pieces of every ``raise`` statement and every exception built (``...Error(...)``) in a module."""
    texts = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            built: ast.AST | None = node if _EXCEPTION.search(name) else None
        else:
            built = node.exc if isinstance(node, ast.Raise) else None
        if built is not None:
            texts += [n.value for n in ast.walk(built) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    return texts


@pytest.mark.parametrize("module", [f"engine/{m}.py" for m in ENGINE] + LIBRARY)
def test_library_modules_raise_no_message_naming_a_flag(module):
    texts = _raised_texts(ROOT / "detkit" / module)
    assert texts  # the scan sees the module's messages
    assert [t for t in texts if re.search(r"(^|[\s(])--[a-z]", t)] == []
