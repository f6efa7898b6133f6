"""int8 with accuracy control: held-out images never the calibration ones, the export flags and their
refusals, and the accuracy-controlled IR evaluated by tools/test.py."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from detkit.config import load_config
from detkit.deploy import letterbox_from_config
from detkit.deploy.calibration import calibration_batches, calibration_indices, held_out_indices, held_out_set
from detkit.errors import DataError
from tests.fixtures.tools import load_tool

TINY = Path(__file__).resolve().parent / "configs" / "yolo_tiny.py"


@pytest.fixture(scope="module")
def int8_cfg(tmp_path_factory) -> Path:
    """yolo_tiny.py with a generated training split of 12 shapes images (4 val)."""
    tmp = tmp_path_factory.mktemp("int8_cfg")
    root = tmp / "shapes"
    path = tmp / "tiny_int8.py"
    path.write_text(f'''from detkit.config import L
from detkit.data import LetterBox, ShapesDataset

_base_ = [{str(TINY)!r}]
data = dict(
    train=dict(dataset=L(ShapesDataset)(root={str(root)!r}, split="train", num_train=12, num_val=4, size=192,
                                        seed=0, pipeline=[L(LetterBox)(size=256)]), batch_size=4, num_workers=0),
    val=dict(dataset=dict(root={str(root)!r}, num_train=12)),
)
''')
    return path


def test_calibration_and_held_out_indices_exact():
    assert calibration_indices(10, 4).tolist() == [0, 3, 6, 9]
    assert calibration_indices(3, 300).tolist() == [0, 1, 2]  # all of a small split
    # the 6 left are 1 2 4 5 7 8; three spread over them: positions 0, 2 (2.5 rounds to even), 5
    assert held_out_indices(10, 3, [0, 3, 6, 9]).tolist() == [1, 4, 8]
    assert held_out_indices(10, 6, [0, 3, 6, 9]).tolist() == [1, 2, 4, 5, 7, 8]
    with pytest.raises(DataError, match=r"has 10 images and calibration takes 4: 6 left, 7 asked"):
        held_out_indices(10, 7, [0, 3, 6, 9])
    with pytest.raises(DataError, match="0 left"):
        held_out_indices(3, 1, calibration_indices(3, 300))
    for bad in (lambda: calibration_indices(5, 0), lambda: held_out_indices(5, 0, [])):
        with pytest.raises(ValueError, match="at least one"):
            bad()


@pytest.mark.parametrize("total", [1, 2, 7, 50, 1000])
def test_held_out_indices_never_overlap_calibration(total):
    for calib in sorted({1, 2, total // 3 or 1, total // 2 or 1, total - 1 or 1}):
        taken = calibration_indices(total, calib)
        left = total - len(taken)
        for count in sorted({1, left // 2 or 1, left}):
            if left == 0:
                continue
            held = held_out_indices(total, count, taken)
            assert len(held) == count and len(np.unique(held)) == count
            assert not set(held.tolist()) & set(taken.tolist()) and held.min() >= 0 and held.max() < total


def test_held_out_set_reads_other_images_than_calibration(int8_cfg, monkeypatch):
    from detkit.data.shapes import ShapesDataset

    cfg = load_config(str(int8_cfg))
    letterbox = letterbox_from_config(cfg, 32)
    read: list[int] = []
    original = ShapesDataset.read_image
    monkeypatch.setattr(ShapesDataset, "read_image", lambda self, i: read.append(i) or original(self, i))
    batches = calibration_batches(cfg, letterbox, 6)
    assert read == [0, 2, 4, 7, 9, 11] and len(batches) == 6 and batches[0].shape == (1, 3, 256, 256)
    held = held_out_set(cfg, letterbox, 4, calib_count=6)
    assert held.indices.tolist() == [1, 5, 6, 10]
    records = held.dataset.records
    assert len(records) == 12  # the dataset whole; the ground truth is the held-out images'
    assert sorted(im["id"] for im in held.ground_truth["images"]) == sorted(records[i]["image_id"]
                                                                            for i in (1, 5, 6, 10))
    assert {a["image_id"] for a in held.ground_truth["annotations"]} <= {records[i]["image_id"] for i in (1, 5, 6, 10)}
    sample = held.dataset[1]  # letterboxed as at inference, no augmentation
    assert sample["img"].shape[:2] == (256, 256) and sample["image_id"] == records[1]["image_id"]
    with pytest.raises(DataError, match="12 images and calibration takes 12: 0 left"):
        held_out_set(cfg, letterbox, 1, calib_count=300)


def test_accuracy_control_arguments_refused():
    from detkit.deploy.openvino_runtime import AccuracyControl

    with pytest.raises(ValueError, match="at least one held-out item"):
        AccuracyControl(lambda d, i: 0.0, 0)
    with pytest.raises(ValueError, match=r"max_drop is an absolute drop of the metric in \[0, 1\), got 1.5"):
        AccuracyControl(lambda d, i: 0.0, 4, 1.5)


@pytest.mark.parametrize("args, message", [
    (["--int8-max-drop", "1"], "--int8-max-drop needs --int8"),
    (["--int8-head"], "--int8-head needs --int8"),
    (["--int8", "--int8-max-drop", "100"], "--int8-max-drop 100: an AP drop in points must be under 100"),
    (["--int8", "--int8-max-drop", "-1"], "must be a number >= 0, got '-1'"),
    (["--int8", "--accuracy-images", "10"], "--accuracy-images needs --int8-max-drop"),
    (["--int8", "--int8-max-drop", "1", "--accuracy-images", "0"], "must be an integer >= 1, got '0'"),
])
def test_export_flags_refused_in_one_line(tmp_path, int8_cfg, args, message, capsys):
    ckpt = tmp_path / "m.pth"
    ckpt.write_bytes(b"")  # never read: the flags are refused first
    code = load_tool("export").main([str(int8_cfg), str(ckpt), "--format", "openvino",
                                     "--out", str(tmp_path / "m.xml"), *args])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()  # argparse's own refusals come after its usage lines
    assert code == 2 and message in lines[-1] and (len(lines) == 1 or lines[0].startswith("usage:")), err
    assert not (tmp_path / "m.xml").exists()


def test_missing_nncf_named_in_one_line(tmp_path, int8_cfg, monkeypatch, capsys):
    pytest.importorskip("openvino")
    monkeypatch.setitem(sys.modules, "nncf", None)
    ckpt = tmp_path / "m.pth"
    ckpt.write_bytes(b"")
    code = load_tool("export").main([str(int8_cfg), str(ckpt), "--format", "openvino", "--int8",
                                     "--int8-max-drop", "1", "--out", str(tmp_path / "m.xml")])
    err = capsys.readouterr().err
    assert code == 2 and "int8 quantization (NNCF) needs the nncf package: pip install 'detkit[openvino]'" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_accuracy_controlled_ir_round_trip(tmp_path, int8_cfg, checkpoint, capsys):
    """export --int8 --int8-max-drop on 6 calibration + 4 held-out training images, then tools/test.py on the IR."""
    pytest.importorskip("nncf")
    ov = pytest.importorskip("openvino")
    from detkit.deploy.openvino_runtime import OpenVinoDetector, float_convolutions

    out = tmp_path / "tiny_int8.xml"
    assert load_tool("export").main([str(int8_cfg), str(checkpoint), "--format", "openvino", "--int8",
                                     "--calib-images", "6", "--int8-max-drop", "1", "--accuracy-images", "4",
                                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "accuracy control on 4 held-out training images: AP " in printed
    runtime = OpenVinoDetector(out)
    assert runtime.metadata.source["quantization"].startswith("int8 with accuracy control (max drop 0.01 on 4 held-out")
    model = ov.Core().read_model(str(out))
    kept = float_convolutions(model)
    assert f"{len(kept)} of " in printed and len(kept) >= 3  # the three prediction convs at least
    assert "FakeQuantize" in {op.get_type_name() for op in model.get_ordered_ops()}
    test = load_tool("test")
    metrics = test.run(test.parse_args([str(int8_cfg), str(out), "--no-progress"]))
    assert set(metrics) >= {"AP", "AP50"} and 0.0 <= metrics["AP"] <= 1.0


@pytest.mark.slow
def test_keep_float_and_float_convolutions(tmp_path, onnx_plain, deploy_cfg):
    """Plain int8: the prediction convs alone are float; keep_float adds the named one, exactly."""
    pytest.importorskip("nncf")
    ov = pytest.importorskip("openvino")
    from detkit.data.shapes import make_shape_image
    from detkit.deploy import letterbox_images
    from detkit.deploy.openvino_runtime import export_openvino, float_convolutions

    letterbox = letterbox_from_config(deploy_cfg, 32)
    calib = [letterbox_images([make_shape_image(100 + i, 256)[0]], letterbox, bgr=False)["images"].numpy()
             for i in range(4)]
    convs = [op.get_friendly_name() for op in ov.convert_model(str(onnx_plain)).get_ordered_ops()
             if op.get_type_name() == "Convolution"]
    preds = [c for c in convs if "/head/" in c and "preds" in c]
    assert len(preds) == 3
    plain = export_openvino(onnx_plain, tmp_path / "plain.xml", calibration=calib, calibration_size=4)
    assert sorted(float_convolutions(ov.Core().read_model(str(plain)))) == sorted(preds)
    kept = export_openvino(onnx_plain, tmp_path / "kept.xml", calibration=calib, calibration_size=4,
                           keep_float=[convs[0]])
    assert sorted(float_convolutions(ov.Core().read_model(str(kept)))) == sorted(preds + [convs[0]])
