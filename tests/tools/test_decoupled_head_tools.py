"""The decoupled head through every tool a user runs: train, test, export (ONNX parity), infer
(PyTorch and ONNX Runtime), compare_assigners, on generated 128 px shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.tools import load_tool

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {name: str(ROOT / "tests" / "engine" / "configs" / f"shapes_tiny_{name}.py")
           for name in ("decoupled", "yolox")}


@pytest.mark.parametrize("head", ["decoupled", "yolox"])
def test_train_test_export_infer_compare(tmp_path, capsys, head):
    pytest.importorskip("onnxruntime")
    root = tmp_path / "shapes"
    opts = [f"data.train.dataset.root='{root}'", f"data.val.dataset.root='{root}'"]
    cfg = CONFIGS[head]
    work = tmp_path / "work"
    assert load_tool("train").main([cfg, "--work-dir", str(work), "--cfg-options", *opts]) == 0
    header = (work / "metrics.csv").read_text().splitlines()[0].split(",")
    expected = ({"loss_cls", "loss_box", "loss_obj", "loss_reg"} if head == "yolox"
                else {"loss_cls", "loss_box", "loss_dfl"})
    assert {c for c in header if c.startswith("loss_")} == expected
    if head == "yolox":  # reg_last_epochs=1: YOLOX's L1 only in the last of the 2 epochs
        rows = [dict(zip(header, line.split(","))) for line in (work / "metrics.csv").read_text().splitlines()[1:]]
        assert [float(r["loss_reg"]) > 0 for r in rows] == [False, True]

    capsys.readouterr()
    assert load_tool("test").main([cfg, str(work / "epoch_2.pth"), "--out", str(tmp_path / "r.json"),
                                   "--no-progress", "--cfg-options", *opts]) == 0
    assert "maxDets=100 ] =" in capsys.readouterr().out
    assert isinstance(json.loads((tmp_path / "r.json").read_text()), list)

    onnx = tmp_path / "model.onnx"  # the export tool checks ONNX Runtime against PyTorch after writing
    assert load_tool("export").main([cfg, str(work / "epoch_2.pth"), "--out", str(onnx), "--with-nms",
                                     "--cfg-options", *opts]) == 0
    results = {}
    for name, model_args in (("pth", [cfg, str(work / "epoch_2.pth")]), ("onnx", [str(onnx)])):
        out = tmp_path / f"infer_{name}"
        extra = ["--cfg-options", *opts] if name == "pth" else []
        assert load_tool("infer").main([*model_args, str(root / "val"), "--out", str(out), "--score-thr", "0.05",
                                        "--device", "cpu", *extra]) == 0
        results[name] = json.loads((out / "detections.json").read_text())
    assert [r["file"] for r in results["pth"]] == [r["file"] for r in results["onnx"]] and len(results["pth"]) == 8
    for a, b in zip(results["pth"], results["onnx"]):
        assert [d["name"] for d in a["detections"]] == [d["name"] for d in b["detections"]]

    out = tmp_path / "compare"
    assert load_tool("compare_assigners").main([cfg, "--assigners", "atss", "tal", "simota", "--images", "8",
                                                "--out", str(out), "--cfg-options", *opts]) == 0
    table = (out / "assigners.md").read_text()
    assert "| tal |" in table and "| simota |" in table
