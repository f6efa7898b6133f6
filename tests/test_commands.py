"""The ``detkit`` command's dispatch, packaged configs found by name, dataset roots, the tools/ shims."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from detkit.__main__ import COMMANDS, main
from detkit.config import ConfigError, load_config
from detkit.config_files import config_dir, find_config, list_configs
from detkit.data import roots

ROOT = Path(__file__).resolve().parents[1]


def test_every_subcommand_names_a_tool_module_and_every_tool_has_a_subcommand() -> None:
    modules = {p.stem for p in (ROOT / "detkit" / "tools").glob("*.py") if p.stem != "__init__"}
    assert {module for module, _ in COMMANDS.values()} == modules
    # and the repository's tools/ has a shim for each (demo.py is the repository's own)
    assert {p.stem for p in (ROOT / "tools").glob("*.py")} == modules | {"demo"}


def test_unknown_command_is_one_line_and_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trian"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: unknown command 'trian'; commands: train, test,")


def test_no_command_prints_usage_with_status_2_and_help_with_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: detkit [--debug] COMMAND" in capsys.readouterr().out
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in COMMANDS)


def test_subcommand_runs_the_tool_with_its_arguments_and_status(capsys: pytest.CaptureFixture[str]) -> None:
    # print-config of a packaged config by bare name: the tool's own output
    assert main(["print-config", "yolov8n_tal.py", "--cfg-options", "train.epochs=7"]) == 0
    assert "epochs=7" in capsys.readouterr().out
    # a tool's usage error keeps the tool's status (argparse: 2)
    assert main(["test"]) == 2
    assert "usage: detkit test" in capsys.readouterr().err


def test_configs_subcommand_lists_the_packaged_leaf_configs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["configs"]) == 0
    listed = capsys.readouterr().out.splitlines()[1:]
    assert listed == list_configs()
    assert "yolov8n_tal.py" in listed and not any(name.startswith("common") for name in listed)


def test_find_config_prefers_an_existing_path_then_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    packaged = config_dir() / "yolov8n_tal.py"
    assert find_config("yolov8n_tal.py") == str(packaged) or Path("yolov8n_tal.py").is_file()
    assert find_config("yolov8n_tal") == str(packaged)
    assert find_config("detkit://yolov8n_tal.py") == str(packaged)
    assert find_config("configs/yolov8n_tal.py") == "configs/yolov8n_tal.py"  # the checkout's link, as given
    monkeypatch.chdir(tmp_path)
    assert find_config("configs/yolov8n_tal.py") == str(packaged)  # no such path here: the packaged one
    own = tmp_path / "yolov8n_tal.py"
    own.write_text("x = 1\n")
    assert find_config("yolov8n_tal.py") == "yolov8n_tal.py"  # the user's own file wins
    assert find_config("detkit://yolov8n_tal.py") == str(packaged)  # unless they ask for the packaged one
    assert load_config("yolov8n_tal.py") == {"x": 1}


@pytest.mark.parametrize("name", ["nosuch.py", "detkit://nosuch.py", "detkit://../../setup.cfg", "../setup.cfg"])
def test_a_missing_config_is_one_config_error(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^config file not found: .*(detkit configs)"):
        load_config(name)


def test_packaged_config_loads_with_its_base_chain_from_any_folder(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config("detkit://yolov8n_tal.py")
    assert cfg.model.backbone.scale == "n" and cfg.data.num_classes == 80


def test_a_users_config_inherits_a_packaged_one_by_detkit_scheme(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``_base_ = ["detkit://yolov8n_tal.py"]`` in a config outside the package: the packaged file, its own
    relative bases, then the user's values; a packaged name that does not exist is one ConfigError naming it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.py").write_text('_base_ = ["detkit://yolov8n_tal.py"]\ntrain = dict(epochs=3)\n')
    cfg = load_config("mine.py")
    assert (cfg.model.backbone.scale, cfg.data.num_classes, cfg.train.epochs) == ("n", 80, 3)
    (tmp_path / "bad.py").write_text('_base_ = "detkit://nosuch.py"\n')
    with pytest.raises(ConfigError, match=r"bad\.py: _base_ detkit://nosuch\.py: config file not found"):
        load_config("bad.py")


def test_dataset_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DETKIT_DATA", "DETKIT_COCO", "DETKIT_COCO128"):
        monkeypatch.delenv(var, raising=False)
    assert roots.checkout_root() == ROOT
    assert roots.data_dir() == ROOT / "data"  # a checkout: its own data/, from any folder
    assert roots.dataset_root("coco", "DETKIT_COCO") == str(ROOT / "data" / "coco")
    monkeypatch.setenv("DETKIT_DATA", str(tmp_path))
    assert roots.dataset_root("coco", "DETKIT_COCO") == str(tmp_path / "coco")
    monkeypatch.setenv("DETKIT_COCO", "/x/coco")
    assert roots.dataset_root("coco", "DETKIT_COCO") == "/x/coco"
    monkeypatch.setattr(roots, "checkout_root", lambda: None)  # an installed wheel
    monkeypatch.delenv("DETKIT_DATA")
    assert roots.data_dir() == Path("data") and roots.coco128_root() == str(Path("data") / "coco128")
    monkeypatch.setenv("DETKIT_COCO128", "/y")
    assert roots.coco128_root() == "/y"


def test_repository_shim_runs_the_packaged_tool_from_another_folder(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "print_config.py"), "shapes_atss.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "ATSSAssigner" in done.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "tools" / "print_config.py"), "nosuch.py"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: config file not found: nosuch.py")
