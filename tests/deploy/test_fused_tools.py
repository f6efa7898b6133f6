"""The predicting tools run the fused model (Conv + BatchNorm folded) unless --no-fuse: same detections."""

from __future__ import annotations

import cv2
import pytest
import torch
from torch import nn

from detkit.data.shapes import make_shape_image
from detkit.deploy import load_predictor
from detkit.engine import inference
from tests.deploy.conftest import CFG
from tests.fixtures.spies import record_calls
from tests.fixtures.tools import load_tool


def _has_bn(model: nn.Module) -> bool:
    return any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_predictor_is_fused_by_default_with_the_same_detections(checkpoint, same_detections):
    fused, plain = load_predictor(checkpoint, CFG, device="cpu"), load_predictor(checkpoint, CFG, device="cpu",
                                                                                   fuse=False)
    assert not _has_bn(fused.model) and _has_bn(plain.model)
    frames = [make_shape_image(i, 200)[0][:, :, ::-1].copy() for i in range(2)]
    with torch.no_grad():
        a, b = fused(frames), plain(frames)
    assert sum(len(d["scores"]) for d in b) > 0
    same_detections(a, b, box_atol=1e-3, score_atol=1e-5)


def test_infer_tool_fuses_unless_no_fuse(tmp_path, checkpoint, monkeypatch):
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    cv2.imwrite(str(image), make_shape_image(3, 200)[0][:, :, ::-1])
    import detkit.deploy as deploy

    calls = record_calls(monkeypatch, deploy, "load_predictor")
    infer = load_tool("infer")
    runs = []
    for flags in ([], ["--no-fuse"]):
        args = infer.parse_args([str(CFG), str(checkpoint), str(image), "--out", str(tmp_path / f"out{len(runs)}"),
                                 "--device", "cpu", "--score-thr", "0.001", *flags])
        runs.append(infer.run(args))
    assert [_has_bn(c.result.model) for c in calls] == [False, True]
    (fused,), (plain,) = runs
    assert plain["detections"] and len(fused["detections"]) == len(plain["detections"])
    best = max(plain["detections"], key=lambda d: d["score"])
    best_fused = max(fused["detections"], key=lambda d: d["score"])
    assert best_fused["label"] == best["label"] and best_fused["score"] == pytest.approx(best["score"], abs=1e-5)
    assert best_fused["bbox"] == pytest.approx(best["bbox"], abs=1e-3)


def test_test_tool_fuses_unless_no_fuse(checkpoint, monkeypatch):
    calls = record_calls(monkeypatch, inference, "evaluate_dataset")
    test = load_tool("test")
    for flags in ([], ["--no-fuse"]):
        assert test.main([str(CFG), str(checkpoint), "--device", "cpu", "--no-progress", *flags]) == 0
    # evaluate_dataset(model, ...) -> (metrics, results), once per run
    (fused_bn, fused, fused_n), (plain_bn, plain, plain_n) = [(_has_bn(c.args[0]), c.result[0], len(c.result[1]))
                                                               for c in calls]
    assert not fused_bn and plain_bn
    assert plain_n > 0 and fused_n == plain_n
    assert {k: round(v, 4) for k, v in fused.items()} == {k: round(v, 4) for k, v in plain.items()}


def test_exported_graph_has_batchnorm_folded(onnx_plain):
    """tools/export.py needs no fused copy: torch's ONNX export of an eval-mode model folds every BatchNorm."""
    onnx = pytest.importorskip("onnx")
    ops = [node.op_type for node in onnx.load(str(onnx_plain)).graph.node]
    assert ops.count("Conv") > 50 and "BatchNormalization" not in ops
