"""OpenVINO backend: ONNX -> IR round trip against PyTorch, int8 (NNCF) against fp32, bf16, missing extra."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from detkit.data.shapes import make_shape_image
from detkit.deploy import DecodedOutputs, OnnxDetector, letterbox_from_config, letterbox_images
from detkit.errors import CheckpointError, ConfigError
from detkit.extras import MissingExtraError
from tests.fixtures.tools import load_tool

pytest.importorskip("onnxruntime")
ov = pytest.importorskip("openvino", reason="the openvino extra is not installed: pip install 'detkit[openvino]'")

from detkit.deploy.calibration import ExportedEvalModel  # noqa: E402
from detkit.deploy.openvino_runtime import (  # noqa: E402
    OpenVinoDetector,
    check_precision,
    decode_ignored_scope,
    export_openvino,
    float_convolutions,
)

TOL = 1e-4  # fp32: as ONNX Runtime's parity (boxes in pixels, scores in (0, 1))


@pytest.fixture(scope="module")
def xml_fp32(tmp_path_factory, onnx_plain):
    return export_openvino(onnx_plain, tmp_path_factory.mktemp("ov") / "tiny.xml")


def shape_batch(deploy_cfg, count: int, first: int = 0):
    frames = [make_shape_image(i, 256)[0] for i in range(first, first + count)]
    return letterbox_images(frames, letterbox_from_config(deploy_cfg, 32), bgr=False)


@pytest.mark.parametrize("batch", [1, 3])
def test_fp32_ir_outputs_equal_pytorch(xml_fp32, varied_model, batch):
    images = torch.rand(batch, 3, 256, 256, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        boxes, scores = DecodedOutputs(varied_model, channels_first=True)(images)
    got = OpenVinoDetector(xml_fp32).run(images)
    assert got["boxes"].shape == (batch, 4, 4032) and got["scores"].shape == (batch, 5, 4032)
    np.testing.assert_allclose(got["boxes"], boxes.numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(got["scores"], scores.numpy(), rtol=0, atol=TOL)


def test_ir_keeps_the_metadata_and_gives_pytorchs_detections(xml_fp32, onnx_plain, varied_model, deploy_cfg,
                                                               same_detections):
    runtime = OpenVinoDetector(xml_fp32)
    onnx_meta = OnnxDetector(onnx_plain).metadata
    assert runtime.metadata.class_names == onnx_meta.class_names
    assert runtime.metadata.postprocess == onnx_meta.postprocess
    assert runtime.metadata.letterbox == onnx_meta.letterbox and runtime.metadata.dynamic_batch
    assert runtime.metadata.source["openvino"] == ov.__version__
    batch = shape_batch(deploy_cfg, 3)
    same_detections(runtime.predict(batch), varied_model.predict(batch))


def test_evaluation_adapter_runs_a_fixed_batch_model_image_by_image(tmp_path, varied_model, deploy_cfg,
                                                                    same_detections):
    from detkit.deploy import build_metadata, export_onnx

    meta = build_metadata(varied_model, letterbox_from_config(deploy_cfg, 32), deploy_cfg.data.class_names)
    xml = export_openvino(export_onnx(varied_model, tmp_path / "b1.onnx", meta), tmp_path / "b1.xml")
    model = ExportedEvalModel(OpenVinoDetector(xml))
    assert not model.runtime.metadata.dynamic_batch and model.size_divisor == 32
    batch = shape_batch(deploy_cfg, 3)
    same_detections(model.predict(batch), varied_model.predict(batch))
    small = {**batch, "images": batch["images"][:, :, :224, :224]}
    with pytest.raises(ConfigError, match="takes 256x256 inputs, the val pipeline gives 224x224"):
        model.predict(small)


def test_decode_ops_are_left_out_of_quantization(xml_fp32):
    model = ov.Core().read_model(str(xml_fp32))
    ignored = set(decode_ignored_scope(model))
    by_name = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    types = {by_name[n].get_type_name() for n in ignored}
    assert "Sigmoid" in types and "Convolution" not in types
    # the last convolutions' consumers are decode ops; every backbone activation (Conv -> Sigmoid -> Multiply)
    # feeds a later convolution and is quantized
    convs = [op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    assert all(op.get_friendly_name() not in ignored for op in convs)
    first_act = [t.get_node() for t in convs[0].outputs()[0].get_target_inputs()]
    assert all(node.get_friendly_name() not in ignored for node in first_act)
    with_preds = set(decode_ignored_scope(model, last_convs=True))
    added = {by_name[n] for n in with_preds - ignored}
    # the YOLOv4 head's 3 prediction convs (1x1, 3 anchors x (5 + 5 classes) channels), nothing else
    assert len(added) == 3 and {op.get_type_name() for op in added} == {"Convolution"}
    assert {op.get_output_partial_shape(0)[1].get_length() for op in added} == {30}
    assert ignored < with_preds


@pytest.mark.slow
def test_int8_detections_overlap_fp32(tmp_path, onnx_plain, xml_fp32, deploy_cfg):
    """int8 (NNCF, 8 shapes images) vs the fp32 IR on 4 held-out images: of fp32's 20 best detections per
    image, at least 80% have an int8 detection of the same class with IoU >= 0.5 (measured: 80 of 80)."""
    calib = [shape_batch(deploy_cfg, 1, first=100 + i)["images"].numpy() for i in range(8)]
    xml = export_openvino(onnx_plain, tmp_path / "tiny_int8.xml", calibration=calib, calibration_size=8)
    int8, fp32 = OpenVinoDetector(xml), OpenVinoDetector(xml_fp32)
    assert int8.metadata.source["quantization"].startswith("int8 (nncf")
    batch = shape_batch(deploy_cfg, 4)
    matched = total = 0
    for a, b in zip(fp32.predict(batch), int8.predict(batch)):
        a = {k: v[a["scores"].argsort(descending=True)[:20]] for k, v in a.items()}
        total += len(a["scores"])
        if len(a["scores"]) and len(b["scores"]):
            iou = box_iou(a["boxes"], b["boxes"]) * (a["labels"][:, None] == b["labels"][None, :])
            matched += int((iou.amax(1) >= 0.5).sum())
    assert total == 80 and matched / total >= 0.8, (matched, total)
    ops = {op.get_type_name() for op in ov.Core().read_model(str(xml)).get_ordered_ops()}
    assert "FakeQuantize" in ops or "FakeConvert" in ops


def test_int8_head_quantizes_the_prediction_convs_too(tmp_path, onnx_plain, xml_fp32, deploy_cfg):
    """By default the head's 3 prediction convs stay in float (float_convolutions names exactly them);
    quantize_head (``export --int8-head``) quantizes them as well, and only them changes."""
    calib = [shape_batch(deploy_cfg, 1, first=100 + i)["images"].numpy() for i in range(4)]
    default = export_openvino(onnx_plain, tmp_path / "int8.xml", calibration=calib, calibration_size=4)
    head = export_openvino(onnx_plain, tmp_path / "int8_head.xml", calibration=calib, calibration_size=4,
                           quantize_head=True)
    core = ov.Core()
    fp32 = core.read_model(str(xml_fp32))
    predictions = set(decode_ignored_scope(fp32, last_convs=True)) - set(decode_ignored_scope(fp32))
    assert len(predictions) == 3
    assert set(float_convolutions(core.read_model(str(default)))) == predictions
    assert float_convolutions(core.read_model(str(head))) == []
    assert OpenVinoDetector(head).metadata.source["quantization"].startswith("int8, prediction convs included (nncf")


def test_bf16_accepted_where_the_cpu_has_it_else_refused_in_one_line(xml_fp32, varied_model):
    assert check_precision("fp32", ["FP32"]) == "f32" and check_precision("bf16", ["FP32", "BF16"]) == "bf16"
    with pytest.raises(ConfigError, match=r"^precision bf16: this CPU has no bf16 instructions .*use precision fp32$"):
        check_precision("bf16", ["FP32", "INT8"])
    with pytest.raises(ConfigError, match="unknown precision 'fp16'"):
        check_precision("fp16", ["FP32"])
    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" not in capabilities:
        with pytest.raises(ConfigError, match="no bf16 instructions"):
            OpenVinoDetector(xml_fp32, precision="bf16")
        return
    runtime = OpenVinoDetector(xml_fp32, precision="bf16")
    assert runtime.session.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.bf16
    assert OpenVinoDetector(xml_fp32).session.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    images = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, scores = DecodedOutputs(varied_model, channels_first=True)(images)
    got = runtime.run(images)["scores"]
    err = np.abs(got - scores.numpy()).max()
    assert 0 < err < 0.05  # bf16 keeps 8 mantissa bits: not fp32's result, close to it


def test_missing_extra_is_named_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(MissingExtraError) as err:
        OpenVinoDetector(tmp_path / "m.xml")
    assert str(err.value) == "the OpenVINO backend needs the openvino package: pip install 'detkit[openvino]'"
    monkeypatch.setitem(sys.modules, "nncf", None)
    monkeypatch.delitem(sys.modules, "openvino")
    with pytest.raises(MissingExtraError, match=r"int8 quantization \(NNCF\) needs the nncf package: "
                                                r"pip install 'detkit\[openvino\]'"):
        export_openvino(tmp_path / "m.onnx", tmp_path / "m.xml", calibration=[])


def test_refusals(tmp_path, onnx_plain, xml_fp32):
    with pytest.raises(CheckpointError, match="OpenVINO model not found"):
        OpenVinoDetector(tmp_path / "none.xml")
    bare = tmp_path / "bare.xml"
    ov.save_model(ov.convert_model(str(onnx_plain)), str(bare))
    with pytest.raises(CheckpointError, match="has no detkit metadata"):
        OpenVinoDetector(bare)
    with pytest.raises(ValueError, match="must end in .xml"):
        export_openvino(onnx_plain, tmp_path / "x.onnx")


# ---------------------------------------------------------------------------------------------------------
# through the tools: export --format openvino, infer MODEL.xml, test MODEL.xml

CFG = str(Path(__file__).resolve().parent / "configs" / "yolo_tiny.py")


@pytest.fixture(scope="module")
def xml_by_tool(tmp_path_factory, checkpoint):
    """tools/export.py --format openvino (fp32, dynamic batch), which checks parity with PyTorch after writing."""
    out = tmp_path_factory.mktemp("ov_tool") / "tiny.xml"
    assert load_tool("export").main([CFG, str(checkpoint), "--format", "openvino", "--out", str(out),
                                     "--dynamic-batch"]) == 0
    assert out.with_suffix(".bin").is_file()
    return out


def test_infer_tool_on_the_xml_gives_pytorchs_json(tmp_path, checkpoint, xml_by_tool):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        img, _ = make_shape_image(50 + i, 128 + 32 * i)
        cv2.imwrite(str(images / f"s{i}.png"), img[..., ::-1])
    common = ["--score-thr", "0.03", "--device", "cpu", "--batch", "2"]
    infer = load_tool("infer")
    assert infer.main([CFG, str(checkpoint), str(images), "--out", str(tmp_path / "pt"), *common]) == 0
    assert infer.main([str(xml_by_tool), str(images), "--out", str(tmp_path / "ov"), "--threads", "1", *common]) == 0
    ref = json.loads((tmp_path / "pt" / "detections.json").read_text())
    got = json.loads((tmp_path / "ov" / "detections.json").read_text())
    assert sum(len(r["detections"]) for r in ref) > 10
    for r, g in zip(ref, got, strict=True):
        key = lambda d: (d["label"], round(d["score"], 4))  # noqa: E731
        assert r["file"] == g["file"] and sorted(map(key, r["detections"])) == sorted(map(key, g["detections"]))


def test_test_tool_on_the_xml_gives_the_checkpoints_results(tmp_path, checkpoint, xml_by_tool):
    """The random model scores AP 0, so its COCO results (hundreds of detections) are compared, with the metrics."""
    test = load_tool("test")
    ref = test.run(test.parse_args([CFG, str(checkpoint), "--no-progress", "--out", str(tmp_path / "pt.json")]))
    got = test.run(test.parse_args([CFG, str(xml_by_tool), "--no-progress", "--out", str(tmp_path / "ov.json")]))
    assert got.keys() == ref.keys() and all(abs(got[k] - ref[k]) < 1e-3 for k in ref)
    key = lambda d: (d["image_id"], d["category_id"], round(d["score"], 4))  # noqa: E731
    pt, ov_ = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("pt", "ov"))
    assert len(pt) > 100 and sorted(map(key, pt)) == sorted(map(key, ov_))


def test_tool_refusals_in_one_line(tmp_path, checkpoint, xml_by_tool, onnx_plain, monkeypatch, capsys):
    export, infer, test = load_tool("export"), load_tool("infer"), load_tool("test")
    assert export.main([CFG, str(checkpoint), "--int8", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "--int8 needs --format openvino" in capsys.readouterr().err
    assert export.main([CFG, str(checkpoint), "--format", "openvino", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "OpenVINO output path must end in .xml" in capsys.readouterr().err
    assert infer.main([str(onnx_plain), str(tmp_path), "--precision", "bf16"]) == 2
    assert "only the OpenVINO backend (a .xml model) runs bf16" in capsys.readouterr().err
    assert test.main([CFG, str(onnx_plain), "--precision", "bf16"]) == 2
    assert "only an OpenVINO (.xml) model runs bf16" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert export.main([CFG, str(checkpoint), "--format", "openvino", "--out", str(tmp_path / "m.xml")]) == 2
    assert "OpenVINO export needs the openvino package: pip install 'detkit[openvino]'" in capsys.readouterr().err
    assert not (tmp_path / "m.xml").exists()
    assert infer.main([str(xml_by_tool), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "the OpenVINO backend needs the openvino package: pip install 'detkit[openvino]'" in err
    assert len(err.strip().splitlines()) == 1
