"""tools/train.py -> --resume -> tools/test.py -> tools/infer.py through their main() functions.

Runs on the engine's stand-in config (tests/engine/configs/tiny.py) so it does not depend on the
data and model parts; a real-model run lives in tests/engine/test_end_to_end.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from detkit.engine.checkpoint import load_checkpoint
from tests.fixtures.runs import train_losses
from tests.fixtures.tools import load_tool

ROOT = Path(__file__).resolve().parents[2]
CFG = str(ROOT / "tests" / "engine" / "configs" / "tiny.py")


tool = load_tool


def test_train_resume_test_infer(tmp_path, capsys):
    work = tmp_path / "work"
    opts = ["train.multi_scale=None", "train.checkpoint.interval_iters=0"]
    train = tool("train")
    assert train.main([CFG, "--work-dir", str(work), "--cfg-options", "train.epochs=1", *opts, "--seed", "5"]) == 0
    assert load_checkpoint(work / "epoch_1.pth")["epoch"] == 1
    assert train.main([CFG, "--work-dir", str(work), "--resume", "--cfg-options", "train.epochs=2", *opts]) == 0
    ckpt = load_checkpoint(work / "epoch_2.pth")
    assert ckpt["epoch"] == 2 and ckpt["iter"] == 8
    assert "resumed from" in (work / "train.log").read_text()

    capsys.readouterr()
    out_json = tmp_path / "results.json"
    assert tool("test").main([CFG, str(work / "best.pth"), "--out", str(out_json), "--device", "cpu",
                              "--pr-curve", str(tmp_path / "pr.png"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("Average Precision") == 6 and printed.count("Average Recall") == 6
    assert "| class" in printed and "c0" in printed
    results = json.loads(out_json.read_text())
    assert len(results) == 8 and {r["category_id"] for r in results} <= {10, 11}

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(images / f"im{i}.png"), rng.integers(0, 255, (48, 80, 3), dtype=np.uint8))
    out = tmp_path / "infer"
    assert tool("infer").main([CFG, str(work / "epoch_2.pth"), str(images), "--out", str(out), "--batch", "2",
                               "--score-thr", "0", "--img-size", "64", "--device", "cpu"]) == 0
    records = json.loads((out / "detections.json").read_text())
    assert [r["file"] for r in records] == ["im0.png", "im1.png", "im2.png"]
    assert all(r["width"] == 80 and r["height"] == 48 and len(r["detections"]) == 1 for r in records)
    assert cv2.imread(str(out / "im1.png")).shape == (48, 80, 3)

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (80, 48))
    for _ in range(3):
        writer.write(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8))
    writer.release()
    assert tool("infer").main([CFG, str(work / "epoch_2.pth"), str(video), "--out", str(out / "v"),
                               "--score-thr", "0", "--img-size", "64", "--device", "cpu"]) == 0
    frames = json.loads((out / "v" / "detections.json").read_text())
    assert [r["frame"] for r in frames] == [0, 1, 2]
    assert (out / "v" / "clip.mp4").stat().st_size > 0


def test_tools_report_user_errors(tmp_path, capsys):
    assert tool("train").main([CFG, "--work-dir", str(tmp_path), "--cfg-options", "train.epoch=1"]) == 2
    assert "unknown key" in capsys.readouterr().err
    assert tool("test").main([CFG, str(tmp_path / "missing.pth"), "--device", "cpu"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert tool("infer").main([CFG, str(tmp_path / "x.pth"), str(tmp_path / "nope"), "--device", "cpu"]) == 2


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_requested_without_cuda_is_a_clear_error(tmp_path, capsys):
    assert tool("infer").main([CFG, str(tmp_path / "x.pth"), str(tmp_path), "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


SHAPES_CFG = str(ROOT / "tests" / "engine" / "configs" / "shapes_tiny.py")


def test_real_parts_train_kill_resume_test_infer(tmp_path, capsys):
    """YOLOv4 (width 0.125) on generated 128 px shapes: train 2 epochs, resume a copy of the run
    from its iteration-1 checkpoint (a kill after it) and compare the following losses exactly,
    then evaluate and infer with the tools."""
    pytest.importorskip("detkit.data.shapes")
    root = tmp_path / "shapes"
    opts = ["--cfg-options", f"data.train.dataset.root='{root}'", f"data.val.dataset.root='{root}'"]
    work = tmp_path / "work"
    assert tool("train").main([SHAPES_CFG, "--work-dir", str(work), *opts]) == 0
    for name in ("epoch_2.pth", "best.pth", "iter_1.pth", "metrics.csv", "losses.png", "assignment.png"):
        assert (work / name).exists(), name
    rows = (work / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and "stat_pos_per_gt" in rows[0] and "AP50" in rows[0]

    killed = tmp_path / "killed"
    killed.mkdir()
    shutil.copy(work / "iter_1.pth", killed / "iter_1.pth")
    assert tool("train").main([SHAPES_CFG, "--work-dir", str(killed), "--resume", str(killed / "iter_1.pth"),
                               *opts]) == 0
    ref, got = train_losses(work), train_losses(killed)
    assert sorted(got) == [2, 3, 4] and all(got[s] == ref[s] for s in got)

    capsys.readouterr()
    assert tool("test").main([SHAPES_CFG, str(work / "epoch_2.pth"), "--out", str(tmp_path / "r.json"),
                              "--no-progress", *opts]) == 0
    printed = capsys.readouterr().out
    assert "maxDets=100 ] =" in printed and "rectangle" in printed
    assert isinstance(json.loads((tmp_path / "r.json").read_text()), list)

    out = tmp_path / "infer"
    assert tool("infer").main([SHAPES_CFG, str(work / "epoch_2.pth"), str(root / "val"), "--out", str(out),
                               "--score-thr", "0.0", "--device", "cpu", *opts]) == 0
    records = json.loads((out / "detections.json").read_text())
    assert len(records) == 8 and all(r["width"] == 128 for r in records)
    assert all(d["name"] in ("rectangle", "ellipse", "triangle", "star", "cross")
               for r in records for d in r["detections"])
