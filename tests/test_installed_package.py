"""The package as a user installs it: a wheel in a fresh venv, the ``detkit`` command run from another folder.

The wheel is built from this checkout (``pip wheel --no-deps``) and installed alone into a new venv
whose dependencies (torch, ...) come from the test venv's site-packages through a path file, so the
test downloads nothing. The installed command must find its packaged configs, train one epoch on a
tiny shapes set and evaluate the result — with the current folder outside the checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None,
        timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding only the detkit wheel (dependencies visible through a .pth file); its bin folder."""
    tmp = tmp_path_factory.mktemp("install")
    wheels = tmp / "wheels"
    built = run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT),
                 "-w", str(wheels)], cwd=tmp)
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("detkit-*.whl")
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    cwd=tmp).stdout.strip())
    # the test venv's packages (torch, numpy, ...) but not its editable detkit: a plain path entry
    # does not run the editable install's finder
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
               cwd=tmp)
    assert done.returncode == 0, done.stderr
    return env_dir / "bin"


def test_the_installed_package_is_the_wheel_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    where = run([str(installed / "python"), "-c", "import detkit; print(detkit.__file__)"], cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert str(ROOT) not in where.stdout and "site-packages" in where.stdout


def test_detkit_command_lists_packaged_configs_and_prints_one(installed: Path, tmp_path: Path) -> None:
    listed = run([str(installed / "detkit"), "configs"], cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    names = listed.stdout.split()
    assert "yolov8n_tal.py" in names and "yolov4_atss.py" in names and "shapes_yolov8_tal.py" in names
    printed = run([str(installed / "detkit"), "print-config", "detkit://yolov8n_tal.py"], cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert "DFLCoder" in printed.stdout  # from its _base_ chain, packaged too
    # an installed package's datasets live under ./data, never beside its own files in site-packages
    assert "ann_file='data/coco/annotations/instances_train2017.json'" in printed.stdout
    module = run([str(installed / "python"), "-m", "detkit", "nosuch"], cwd=tmp_path)
    assert module.returncode == 2 and module.stderr.startswith("error: unknown command 'nosuch'")


def test_installed_command_trains_and_tests_from_another_folder(installed: Path, tmp_path: Path) -> None:
    shapes = tmp_path / "shapes"
    made = run([str(installed / "detkit"), "make-shapes", str(shapes), "--train", "8", "--val", "4", "--size", "64"],
               cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    env = {**os.environ, "DETKIT_SHAPES": str(shapes)}
    options = ["train.epochs=1", "data.train.batch_size=4", "data.val.batch_size=4", "data.train.num_workers=0",
               "data.val.num_workers=0", "runtime.loggers=[]"]
    trained = run([str(installed / "detkit"), "train", "shapes_yolov8_tal.py", "--work-dir", "run", "--no-progress",
                   "--cfg-options", *options], cwd=tmp_path, env=env)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (tmp_path / "run" / "epoch_1.pth").is_file()
    tested = run([str(installed / "detkit"), "test", "shapes_yolov8_tal.py", "run/epoch_1.pth",
                  "--cfg-options", *options[3:5]], cwd=tmp_path, env=env)
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert "AP" in tested.stdout
