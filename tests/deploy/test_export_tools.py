"""tools/export.py and tools/infer.py with both backends; metadata; user errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import onnx
import pytest

from detkit.data.shapes import make_shape_image
from detkit.deploy import DeployMetadata, LetterboxSettings, OnnxDetector, load_predictor
from tests.fixtures.tools import load_tool

pytest.importorskip("onnxruntime")
CFG = str(Path(__file__).resolve().parent / "configs" / "yolo_tiny.py")
CLASSES = ["rectangle", "ellipse", "triangle", "star", "cross"]


def test_metadata_props_round_trip(onnx_plain):
    props = {p.key: p.value for p in onnx.load(str(onnx_plain)).metadata_props}
    assert props["format"] == "detkit-onnx"
    assert json.loads(props["class_names"]) == CLASSES
    assert json.loads(props["input_size"]) == [256, 256]
    assert json.loads(props["letterbox"]) == {"input_size": [256, 256], "pad_value": 114, "center": True,
                                              "scaleup": True}
    assert json.loads(props["strides"]) == [8, 16, 32] and json.loads(props["size_divisor"]) == 32
    assert json.loads(props["nms_pre"]) == 1000 and json.loads(props["max_per_img"]) == 100
    assert json.loads(props["score_thr"]) == 0.001 and json.loads(props["multi_label"]) is True
    assert json.loads(props["outputs"]) == ["boxes", "scores"] and json.loads(props["with_nms"]) is False
    assert json.loads(props["dynamic_batch"]) is True and json.loads(props["channels_first"]) is True
    assert props["format_version"] == "2"  # a detkit older than the channel-first layout refuses the file
    assert json.loads(props["source"])["config"].endswith("yolo_tiny.py")
    meta = DeployMetadata.from_props(props)
    assert meta.to_props() == props and meta.letterbox == LetterboxSettings((256, 256))
    assert OnnxDetector(onnx_plain).metadata == meta


def test_onnx_opset_and_nms_op(onnx_plain, onnx_nms):
    plain, nms = onnx.load(str(onnx_plain)), onnx.load(str(onnx_nms))
    assert [o.version for o in plain.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert "NonMaxSuppression" in {n.op_type for n in nms.graph.node}
    assert "NonMaxSuppression" not in {n.op_type for n in plain.graph.node}
    assert [o.name for o in nms.graph.output] == ["num_dets", "det_boxes", "det_scores", "det_labels"]


def test_metadata_rejects_foreign_models(tmp_path):
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["images"], ["boxes"])], "g",
                                   [onnx.helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("boxes", onnx.TensorProto.FLOAT, [1])])
    path = tmp_path / "foreign.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ValueError, match="no detkit metadata"):
        OnnxDetector(path)
    with pytest.raises(ValueError, match="ONNX model not found"):
        OnnxDetector(tmp_path / "missing.onnx")


@pytest.mark.parametrize(("args", "message"), [
    (["{missing}"], "checkpoint not found"),
    (["{ckpt}", "--format", "tflite"], "unsupported export format 'tflite'; accepted: onnx"),
    (["{ckpt}", "--opset", "13"], "opset 13 is not supported; use 17 or newer"),
    (["{ckpt}", "--out", "{tmp}/model.pt"], "must end in .onnx"),
    (["{ckpt}", "--cfg-options", "model.head.num_classes=80"], "does not fit the model"),  # another head
])
def test_export_tool_reports_user_errors(tmp_path, checkpoint, capsys, args, message):
    argv = [a.format(missing=tmp_path / "missing.pth", ckpt=checkpoint, tmp=tmp_path) for a in args]
    assert load_tool("export").main([CFG, *argv]) == 2
    assert message in capsys.readouterr().err


def test_runtime_checks_its_input(onnx_plain, onnx_nms, tmp_path):
    import numpy as np

    runtime = OnnxDetector(onnx_plain)
    with pytest.raises(ValueError, match=r"takes images \(B, 3, 256, 256\)"):
        runtime.run(np.zeros((1, 3, 320, 320), np.float32))
    batch = {"images": np.zeros((1, 3, 256, 256), np.float32)}
    with pytest.raises(ValueError, match="unknown post-processing options"):
        runtime.predict(batch, iou=0.5)
    with pytest.raises(ValueError, match="settings fixed at export"):
        OnnxDetector(onnx_nms).predict(batch, nms_iou_thr=0.5)
    with pytest.raises(ValueError, match="exported for input 256x256"):
        load_predictor(onnx_plain, img_size=320)
    with pytest.raises(ValueError, match="checkpoint not found"):  # a checkpoint alone is read for its config
        load_predictor(tmp_path / "model.pth")


def test_infer_tool_gives_the_same_json_with_either_backend(tmp_path, checkpoint, onnx_plain, onnx_nms):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):  # RGB shapes written as BGR files; sizes differ so the letterbox pads differ
        img, _ = make_shape_image(50 + i, 128 + 32 * i)
        cv2.imwrite(str(images / f"s{i}.png"), img[..., ::-1])
    common = ["--score-thr", "0.03", "--device", "cpu", "--batch", "2"]
    infer = load_tool("infer")
    assert infer.main([CFG, str(checkpoint), str(images), "--out", str(tmp_path / "pt"), *common]) == 0
    assert infer.main([str(onnx_plain), str(images), "--out", str(tmp_path / "ort"), *common]) == 0
    assert infer.main([str(onnx_nms), str(images), "--out", str(tmp_path / "nms"), *common]) == 0
    ref = json.loads((tmp_path / "pt" / "detections.json").read_text())
    assert sum(len(r["detections"]) for r in ref) > 10
    assert {d["name"] for r in ref for d in r["detections"]} <= set(CLASSES)
    for other in ("ort", "nms"):
        got = json.loads((tmp_path / other / "detections.json").read_text())
        files = lambda records: [(r["file"], r["width"], r["height"]) for r in records]  # noqa: E731
        assert files(got) == files(ref)
        for r, g in zip(ref, got):
            key = lambda d: (d["label"], round(d["score"], 4))  # noqa: E731
            assert sorted(map(key, r["detections"])) == sorted(map(key, g["detections"]))
            for d in r["detections"]:
                assert any(d["label"] == e["label"] and max(abs(a - b) for a, b in zip(d["bbox"], e["bbox"])) < 1e-3
                           for e in g["detections"])
    assert cv2.imread(str(tmp_path / "ort" / "s2.png")).shape == (192, 192, 3)


def test_infer_tool_backend_errors(tmp_path, onnx_plain, capsys):
    infer = load_tool("infer")
    assert infer.main([str(onnx_plain), str(tmp_path), "--compile"]) == 2
    assert "--compile applies to the PyTorch backend" in capsys.readouterr().err
    assert infer.main([str(onnx_plain), str(tmp_path), "--backend", "tensorrt"]) == 2
    assert "unknown backend 'tensorrt'" in capsys.readouterr().err
