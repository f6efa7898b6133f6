"""A head's post-processing settings are checked when the config loads (issue 24.4, found in QA):
``model.head.score_thr=2`` used to train a whole epoch, write its checkpoints and only then stop at
the first evaluation with ``error: score_thr must be in [0, 1), got 2`` (no key named)."""

from __future__ import annotations

from pathlib import Path

import pytest

from detkit.cli import cli_message
from detkit.config import ConfigError, instantiate, load_config
from tests.fixtures.tools import load_tool

ROOT = Path(__file__).resolve().parents[1]
CFG = str(ROOT / "tests" / "engine" / "configs" / "shapes_tiny.py")  # YOLOHead
DECOUPLED = str(ROOT / "tests" / "engine" / "configs" / "shapes_tiny_decoupled.py")  # DecoupledHead

BAD = [
    ("model.head.score_thr=2", "model.head.score_thr: must be in [0, 1), got 2"),
    ("model.head.score_thr=1e400", "model.head.score_thr: must be in [0, 1), got inf"),
    ("model.head.score_thr=-0.1", "model.head.score_thr: must be in [0, 1), got -0.1"),
    ("model.head.nms_iou_thr=0", "model.head.nms_iou_thr: must be in (0, 1], got 0"),
    ("model.head.nms_iou_thr=1.5", "model.head.nms_iou_thr: must be in (0, 1], got 1.5"),
    ("model.head.nms_pre=0", "model.head.nms_pre: must be positive, got 0"),
    ("model.head.max_per_img=-5", "model.head.max_per_img: must be positive, got -5"),
]


@pytest.mark.parametrize("config", [CFG, DECOUPLED], ids=["yolo_head", "decoupled_head"])
@pytest.mark.parametrize("override, expected", BAD, ids=[o for o, _ in BAD])
def test_a_post_processing_setting_out_of_range_is_refused_at_load(config, override, expected):
    with pytest.raises(ConfigError) as info:
        load_config(config, [override])
    assert str(info.value) == f"{config}: {expected} (from the override {override})"
    assert cli_message(info.value) == f"{config}: {expected} (from --cfg-options {override})"


def test_nan_in_a_config_file_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text(f"_base_ = [{CFG!r}]\nmodel = dict(head=dict(score_thr=float('nan')))\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: model.head.score_thr: must be in [0, 1), got nan"


def test_the_edges_of_each_range_load_and_build():
    cfg = load_config(CFG, ["model.head.score_thr=0", "model.head.nms_iou_thr=1", "model.head.nms_pre=1",
                            "model.head.max_per_img=1"])
    head = instantiate(cfg.model).head
    assert {k: head.test_cfg[k] for k in ("score_thr", "nms_iou_thr", "nms_pre", "max_per_img")} == {
        "score_thr": 0, "nms_iou_thr": 1, "nms_pre": 1, "max_per_img": 1}


def test_a_head_built_in_code_refuses_the_setting_when_built():
    cfg = load_config(CFG)
    cfg.model.head.score_thr = 2.0  # past the load-time check
    with pytest.raises(ValueError, match=r"score_thr must be in \[0, 1\), got 2.0"):
        instantiate(cfg.model)


def test_train_refuses_it_before_the_work_dir_in_one_line(tmp_path, capsys):
    work = tmp_path / "work"
    assert load_tool("train").main([CFG, "--work-dir", str(work), "--cfg-options", "model.head.score_thr=2"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == [f"error: {CFG}: model.head.score_thr: must be in [0, 1), got 2 "
                   "(from --cfg-options model.head.score_thr=2)"]
    assert not work.exists()
