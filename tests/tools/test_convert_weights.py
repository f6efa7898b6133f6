"""tools/convert_weights.py without ultralytics: the whole command on a pickled stand-in for
Ultralytics' ``DetectionModel`` (only Ultralytics' unpickler is replaced), what it writes
(``weights_only=True``, meta, strict load, same outputs), its choice of ``ema`` / ``model``, other
class counts, and every refusal as one line with exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from detkit.config import instantiate, load_config
from detkit.engine.weights import load_weights
from detkit.models.convert import to_ultralytics_state_dict
from detkit.models.convert.ultralytics import YOLOV8, UltralyticsLayout, ultralytics_layout
from tests.fixtures.tools import load_tool

ROOT = Path(__file__).resolve().parents[2]


class DetectionModel(nn.Module):
    """Stand-in for ``ultralytics.nn.tasks.DetectionModel``: its class name, ``names``, ``yaml``
    and a ``state_dict`` under Ultralytics' key names."""

    def __init__(self, state: dict[str, torch.Tensor], names, yaml_file: str = "yolov8n.yaml") -> None:
        super().__init__()
        self.weights = state
        self.names = names
        self.yaml = {"yaml_file": yaml_file, "nc": len(names)}

    def state_dict(self, *args, **kwargs):  # noqa: ARG002 - same call as nn.Module's
        return dict(self.weights)


class SegmentationModel(DetectionModel):
    pass


def detkit_yolov8(scale: str = "n", num_classes: int = 80, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    options = [] if num_classes == 80 else [f"model.head.num_classes={num_classes}"]
    model = instantiate(load_config(ROOT / f"configs/yolov8{scale}_tal.py", options).model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def ultralytics_checkpoint(model: nn.Module, entry: str = "ema", cls=DetectionModel,
                           layout: UltralyticsLayout = YOLOV8, yaml_file: str = "yolov8n.yaml") -> dict:
    """What Ultralytics' loader returns for a checkpoint of ``model``: fp16 weights under ``entry``."""
    n = model.head.num_classes
    state = to_ultralytics_state_dict(model.state_dict(), dtype=torch.float16, layout=layout)
    pickled = cls(state, {i: f"k{i}" for i in range(n)}, yaml_file)
    other = "model" if entry == "ema" else "ema"
    return {entry: pickled, other: None, "version": "8.4.190", "epoch": -1}


@pytest.fixture
def tool(monkeypatch):
    """The tool with Ultralytics' unpickler replaced by a plain torch.load (the file holds our stand-in)."""
    module = load_tool("convert_weights")
    monkeypatch.setattr(module, "load_ultralytics",
                        lambda path, unsafe=False: torch.load(path, map_location="cpu", weights_only=False))
    return module


def save(ckpt, path: Path) -> Path:
    torch.save(ckpt, path)
    return path


def test_converts_end_to_end_and_loads_with_weights_only(tool, tmp_path, capsys):
    model = detkit_yolov8("n")
    src = save(ultralytics_checkpoint(model), tmp_path / "best.pt")
    dst = tmp_path / "out" / "yolov8n_detkit.pth"
    assert tool.main(["ultralytics", str(src), str(dst)]) == 0
    out = capsys.readouterr().out
    assert "YOLOv8n (yolov8n.yaml, saved by ultralytics 8.4.190): 'ema' weights, float16 -> float32, 80 classes, " \
           "3,157,184 parameters" in out
    assert f"evaluate: detkit test yolov8n_tal.py {dst}   (detect: detkit infer {dst} IMAGES; " in out
    ckpt = torch.load(dst, weights_only=True)
    assert set(ckpt) == {"model", "config", "meta"}
    assert ckpt["meta"]["config"] == "configs/yolov8n_tal.py" and ckpt["meta"]["scale"] == "n"
    assert ckpt["meta"]["num_classes"] == 80 and ckpt["meta"]["class_names"][:2] == ["k0", "k1"]
    assert ckpt["meta"]["source_entry"] == "ema" and ckpt["meta"]["source_dtype"] == "float16"
    assert all(v.dtype in (torch.float32, torch.int64) for v in ckpt["model"].values())
    # As tools/test.py loads it, into a fresh model: the fp16-rounded original's outputs, exactly.
    fresh = detkit_yolov8("n", seed=1)
    load_weights(fresh, dst, strict=True)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())
        images = torch.rand(1, 3, 64, 96)
        expected, got = model.forward_decoded(images), fresh.eval().forward_decoded(images)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert not list(dst.parent.glob(".*"))  # no temporary left behind


@pytest.mark.parametrize(("family", "config", "classes", "line"), [
    # Ultralytics' yolo11n at 3 classes: 2,590,425 parameters, 16 of them its fixed DFL projection
    ("yolo11", "configs/yolo11n_tal.py", 3, "YOLO11n (yolo11n.yaml, saved by ultralytics 8.4.190): 'ema' weights, "
                                            "float16 -> float32, 3 classes, 2,590,409 parameters"),
    ("yolo26", "configs/yolo26n.py", 80, "YOLO26n (yolo26n.yaml, saved by ultralytics 8.4.190): 'ema' weights, "
                                         "float16 -> float32, 80 classes, 2,572,280 parameters"),
])
def test_yolo11_and_yolo26_convert_to_their_configs(tool, tmp_path, capsys, family, config, classes, line):
    torch.manual_seed(0)
    options = [] if classes == 80 else [f"model.head.num_classes={classes}"]
    model = instantiate(load_config(ROOT / config, options).model).eval()
    ckpt = ultralytics_checkpoint(model, layout=ultralytics_layout(family, "n"), yaml_file=f"{family}n.yaml")
    src, dst = save(ckpt, tmp_path / "best.pt"), tmp_path / f"{family}n.pth"
    assert tool.main(["ultralytics", str(src), str(dst)]) == 0
    out = capsys.readouterr().out
    assert line in out
    name = config.removeprefix("configs/")
    assert f"evaluate: detkit test {name} {dst}{' --cfg-options ' + options[0] if options else ''}   " in out
    meta = torch.load(dst, weights_only=True)["meta"]
    assert (meta["family"], meta["scale"], meta["config"], meta["cfg_options"]) == (family, "n", config, options)
    assert meta["reg_max"] == (16 if family == "yolo11" else 1)
    fresh = instantiate(load_config(ROOT / config, meta["cfg_options"]).model).eval()
    load_weights(fresh, dst, strict=True)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())
        images = torch.rand(1, 3, 64, 96)
        expected, got = model.forward_decoded(images), fresh.forward_decoded(images)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_model_entry_is_used_when_ema_is_none(tool, tmp_path, capsys):
    src = save(ultralytics_checkpoint(detkit_yolov8("n"), entry="model"), tmp_path / "best.pt")
    assert tool.main(["ultralytics", str(src), str(tmp_path / "w.pth")]) == 0
    assert "'model' weights" in capsys.readouterr().out
    assert torch.load(tmp_path / "w.pth", weights_only=True)["meta"]["source_entry"] == "model"


def test_ema_is_preferred_over_model(tool, tmp_path):
    ema, trained = detkit_yolov8("n", seed=1), detkit_yolov8("n", seed=2)
    ckpt = ultralytics_checkpoint(ema)
    ckpt["model"] = ultralytics_checkpoint(trained)["ema"]
    src = save(ckpt, tmp_path / "last.pt")
    assert tool.main(["ultralytics", str(src), str(tmp_path / "w.pth")]) == 0
    got = torch.load(tmp_path / "w.pth", weights_only=True)["model"]["head.cls_preds.0.weight"]
    assert torch.equal(got, ema.state_dict()["head.cls_preds.0.weight"].half().float())


def test_other_class_count_converts_and_says_what_test_needs(tool, tmp_path, capsys):
    src = save(ultralytics_checkpoint(detkit_yolov8("n", num_classes=3)), tmp_path / "best.pt")
    dst = tmp_path / "three.pth"
    assert tool.main(["ultralytics", str(src), str(dst)]) == 0
    out = capsys.readouterr().out
    assert f"evaluate: detkit test yolov8n_tal.py {dst} --cfg-options model.head.num_classes=3" in out
    meta = torch.load(dst, weights_only=True)["meta"]
    assert meta["num_classes"] == 3 and meta["class_names"] == ["k0", "k1", "k2"]
    assert meta["cfg_options"] == ["model.head.num_classes=3"]
    model = instantiate(load_config(ROOT / "configs/yolov8n_tal.py", meta["cfg_options"]).model)
    assert load_weights(model, dst, strict=True)["missing"] == []


def test_weights_that_do_not_fit_the_given_config_are_refused(tool, tmp_path, capsys):
    src = save(ultralytics_checkpoint(detkit_yolov8("n")), tmp_path / "best.pt")
    dst = tmp_path / "w.pth"
    config = str(ROOT / "configs/yolov8s_tal.py")
    assert tool.main(["ultralytics", str(src), str(dst), "--config", config]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: the YOLOv8n weights of {src} do not fit {config}: ") and "another shape" in err
    assert len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == [src]  # neither DST nor a temporary


def test_existing_dst_needs_overwrite(tool, tmp_path, capsys):
    src = save(ultralytics_checkpoint(detkit_yolov8("n")), tmp_path / "best.pt")
    dst = tmp_path / "w.pth"
    dst.write_bytes(b"user's file")
    assert tool.main(["ultralytics", str(src), str(dst)]) == 2
    assert capsys.readouterr().err == f"error: DST {dst} exists; pass --overwrite to replace it\n"
    assert dst.read_bytes() == b"user's file"
    assert tool.main(["ultralytics", str(src), str(dst), "--overwrite"]) == 0
    assert "model" in torch.load(dst, weights_only=True)


@pytest.mark.parametrize("ckpt, message", [
    (lambda m: ultralytics_checkpoint(m, cls=SegmentationModel), "a segmentation model, not a detection model"),
    (lambda m: [1, 2], "not an Ultralytics checkpoint (a list, expected a dict with 'model' / 'ema')"),
    (lambda m: {"model": None, "ema": None, "epoch": 3}, "no model under 'ema' or 'model' (keys: model, ema, epoch)"),
    (lambda m: {"model": m.state_dict()}, "'model' holds a OrderedDict, not a pickled Ultralytics model"),
    (lambda m: {"model": DetectionModel({"model.0.conv.weight": torch.zeros(40, 3, 3, 3)}, {})},
     "not a layer layout detkit converts (closest: YOLOv8's"),
])
def test_bad_checkpoints_are_one_line_errors(tool, tmp_path, capsys, ckpt, message):
    src = save(ckpt(detkit_yolov8("n")), tmp_path / "bad.pt")
    assert tool.main(["ultralytics", str(src), str(tmp_path / "w.pth")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {src}: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "w.pth").exists()


def test_missing_ultralytics_is_one_line_with_status_2(monkeypatch, tmp_path, capsys):
    tool = load_tool("convert_weights")
    monkeypatch.setitem(__import__("sys").modules, "ultralytics", None)  # import ultralytics -> ImportError
    monkeypatch.setitem(__import__("sys").modules, "ultralytics.nn.tasks", None)
    src = tmp_path / "yolov8s.pt"
    src.write_bytes(b"x")
    assert tool.main(["ultralytics", str(src), str(tmp_path / "w.pth")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ultralytics is not installed in this Python (")
    assert ".venv-bench/bin/python" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["ultralytics", "{tmp}/missing.pt", "{tmp}/w.pth"], "error: {tmp}/missing.pt: no such file\n"),
    (["ultralytics", "{tmp}/src.pt", "{tmp}"], "error: DST {tmp}: is a folder, expected a file path\n"),
    (["ultralytics", "{tmp}/src.pt", "{tmp}/src.pt", "--overwrite"], "error: DST {tmp}/src.pt is SRC: write the "
     "converted weights to another file\n"),
])
def test_path_mistakes(args, message, tmp_path, capsys):
    tool = load_tool("convert_weights")
    (tmp_path / "src.pt").write_bytes(b"x")
    assert tool.main([a.format(tmp=tmp_path) for a in args]) == 2
    assert capsys.readouterr().err == message.format(tmp=tmp_path)


def test_unknown_format_is_a_usage_error(tmp_path, capsys):
    assert load_tool("convert_weights").main(["yolox", "a.pth", "b.pth"]) == 2
    assert "invalid choice: 'yolox'" in capsys.readouterr().err


def test_a_file_ultralytics_cannot_read_is_one_line(tmp_path, capsys):
    pytest.importorskip("ultralytics")  # the bench venv; `make test` has no ultralytics
    tool = load_tool("convert_weights")
    src = tmp_path / "broken.pt"
    src.write_bytes(b"not a zip archive at all")
    assert tool.main(["ultralytics", str(src), str(tmp_path / "w.pth")]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {src}: not a PyTorch checkpoint, or a truncated one (torch.save writes a zip archive; "
                   "this file is not a complete one)\n")


@pytest.mark.parametrize(("family", "config", "classes"), [("yolov8", "configs/yolov8n_tal.py", 3),
                                                           ("yolo26", "configs/yolo26n.py", 80)])
def test_converted_checkpoint_carries_its_config_for_infer_and_export(tool, tmp_path, family, config, classes):
    """Before: the converted file held no ``config``, so ``detkit infer|export DST`` refused it ("has no config
    inside"); now it loads alone, as a trained checkpoint, with the weights' class count and names."""
    from detkit.engine.checkpoint_config import load_checkpoint_model

    torch.manual_seed(0)
    options = [] if classes == 80 else [f"model.head.num_classes={classes}"]
    model = instantiate(load_config(ROOT / config, options).model).eval()
    ckpt = ultralytics_checkpoint(model, layout=ultralytics_layout(family, "n"), yaml_file=f"{family}n.yaml")
    src, dst = save(ckpt, tmp_path / "best.pt"), tmp_path / "converted.pth"
    assert tool.main(["ultralytics", str(src), str(dst)]) == 0
    loaded = load_checkpoint_model(dst)  # no config given
    assert loaded.class_names == [f"k{i}" for i in range(classes)]
    assert loaded.detector.head.num_classes == classes
    assert (loaded.cfg.data.num_classes, list(loaded.cfg.data.class_names)) == (classes, loaded.class_names)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())
        images = torch.rand(1, 3, 64, 96)
        expected, got = model.forward_decoded(images), loaded.detector.eval().forward_decoded(images)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
