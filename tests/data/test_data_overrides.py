"""``--cfg-options data.<split>.dataset.KEY=...`` with ``--data``: applied to the dataset reading the
user's data, after it replaced the config's (a shapes config + a Roboflow data.yaml), in every tool
that takes both (train, test, compare, ablate: :func:`detkit.data.adopt.load_data_config`)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from detkit.config import ConfigError
from detkit.data.adopt import load_data_config, refuse_replaced_overrides, split_dataset_overrides
from detkit.errors import UsageError
from tests.data.test_sources import roboflow_export
from tests.fixtures.tools import load_tool

ROOT = Path(__file__).resolve().parents[2]
SHAPES = str(ROOT / "tests" / "engine" / "configs" / "shapes_tiny.py")  # ShapesDataset: no check_images argument


def _args(data: Path | None) -> argparse.Namespace:
    return argparse.Namespace(data=str(data) if data else None, img_dir=None, img_size=64)


def test_split_keeps_the_order_and_takes_only_a_splits_dataset_arguments() -> None:
    items = ["train.epochs=1", "data.train.dataset.check_images=True", "data.train.batch_size=2",
             "data.val.dataset.max_size=2048", "data.test.dataset.pipeline.0.size=64", "data.dataset.x=1"]
    assert split_dataset_overrides(items) == (
        ["train.epochs=1", "data.train.batch_size=2", "data.dataset.x=1"],
        ["data.train.dataset.check_images=True", "data.val.dataset.max_size=2048",
         "data.test.dataset.pipeline.0.size=64"])


def test_an_argument_only_the_yolo_dataset_takes_is_applied_to_it(tmp_path: Path) -> None:
    data = roboflow_export(tmp_path / "rf")
    overrides = ["train.epochs=3", "data.train.dataset.check_images=True", "data.val.dataset.max_size=2048"]
    cfg = load_data_config(SHAPES, overrides, _args(data), quiet=True)
    train, val = cfg.data.train.dataset, cfg.data.val.dataset
    assert train["_target_"].__name__ == "YoloDataset" and train.check_images is True
    assert val.max_size == 2048 and "check_images" not in val and cfg.train.epochs == 3
    assert train.img_dir == str(tmp_path / "rf" / "train" / "images")
    # without --data the same override is checked against the config's own ShapesDataset (refused)
    with pytest.raises(ConfigError, match="ShapesDataset got unexpected argument.*check_images"):
        load_data_config(SHAPES, overrides, _args(None))


@pytest.mark.parametrize("key", ["bogus", "num_train"])  # neither dataset takes it; only ShapesDataset does
def test_an_argument_the_yolo_dataset_does_not_take_is_one_line_and_status_2(key: str, tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture[str]):
    data = roboflow_export(tmp_path / "rf")
    work = tmp_path / "run"
    rc = load_tool("train").main([SHAPES, "--data", str(data), "--work-dir", str(work), "--device", "cpu",
                                  "--cfg-options", f"data.train.dataset.{key}=1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith("error: ") and "'data.train.dataset'" in err
    assert f"YoloDataset got unexpected argument(s) '{key}'" in err
    assert f"with --data {data}" in err and not work.exists()


def test_ablate_gives_the_dataset_overrides_to_the_users_data(tmp_path: Path) -> None:
    tool = load_tool("ablate_assigners")
    data = roboflow_export(tmp_path / "rf")
    row = tool.AblationRow(label="tal", config=SHAPES, assigner="config",
                           cfg_options=("data.train.dataset.check_images=True",))
    cfg = tool.run_config(row, 0, ["data.val.dataset.max_size=100"], data=_args(data))
    assert cfg.data.train.dataset.check_images is True and cfg.data.val.dataset.max_size == 100


@pytest.mark.parametrize("override", ["data.class_names=['a','b','c']", "data.num_classes=5",
                                      "model.head.num_classes=5"])
def test_an_override_of_the_classes_with_data_is_refused_not_dropped(override: str, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]):
    """--data sets the classes from the data; an override of them used to be replaced without a word."""
    data = roboflow_export(tmp_path / "rf")
    key = override.partition("=")[0]
    with pytest.raises(UsageError, match=rf"--cfg-options {re.escape(key)}: --data .* sets the classes"):
        load_data_config(SHAPES, [override], _args(data), quiet=True)
    work = tmp_path / "run"
    rc = load_tool("train").main([SHAPES, "--data", str(data), "--work-dir", str(work), "--device", "cpu",
                                  "--cfg-options", override])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith(f"error: --cfg-options {key}:"), err
    assert not work.exists()


def test_refuse_replaced_overrides_leaves_other_keys_alone() -> None:
    refuse_replaced_overrides(["data.img_size=64", "data.train.batch_size=2", "model.head.reg_max=16",
                               "train.epochs=1", "data.train.dataset.check_images=True"], "d.yaml")
    with pytest.raises(UsageError, match="model.neck.num_classes"):
        refuse_replaced_overrides(["train.epochs=1", "model.neck.num_classes = 3"], "d.yaml")
