"""A checkpoint used alone: infer / export build the model from the config stored inside it, label
with the class names it was trained with, and tools/test.py refuses val data whose names differ
(issue 23 items 2 and 4, issue 24 item 2)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
import torch

from detkit.config import ConfigError, format_config, load_config
from detkit.data import SHAPE_CLASSES
from detkit.data.shapes import make_shape_image
from detkit.engine.checkpoint_config import (
    checkpoint_class_names,
    config_from_dump,
    load_checkpoint_model,
    stored_config,
)
from tests.deploy.conftest import CFG
from tests.fixtures.tools import load_tool

ROOT = Path(__file__).resolve().parents[2]
NAMES = list(SHAPE_CLASSES)  # what these checkpoints say they learnt
COCO_LIKE = ["person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "microwave"]


def save(path: Path, model, cfg=None, meta_names=None) -> Path:
    """A checkpoint as the trainer writes its weights file: model, config dump, meta."""
    state = {"model": model.state_dict()}
    if cfg is not None:
        state["config"] = format_config(cfg)
    if meta_names is not None:
        state["meta"] = {"class_names": list(meta_names), "num_classes": len(meta_names), "img_size": 256}
    torch.save(state, path)
    return path


@pytest.fixture()
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        img, _ = make_shape_image(70 + i, 160)
        cv2.imwrite(str(folder / f"s{i}.png"), img[..., ::-1])
    return folder


def detections(out: Path) -> list[tuple]:
    records = json.loads((out / "detections.json").read_text())
    return [(r["file"], d["label"], d["name"], round(d["score"], 5)) for r in records for d in r["detections"]]


def test_stored_config_round_trips_every_shipped_config():
    for path in sorted((ROOT / "detkit" / "configs").glob("*.py")):
        cfg = load_config(str(path))
        assert config_from_dump(format_config(cfg), "dump") == cfg, path.name


def test_infer_from_a_checkpoint_alone_equals_infer_with_its_config(tmp_path, varied_model, deploy_cfg, images):
    ckpt = save(tmp_path / "run.pth", varied_model, deploy_cfg, NAMES)
    infer = load_tool("infer")
    common = ["--score-thr", "0.03", "--device", "cpu"]
    assert infer.main([str(ckpt), str(images), "--out", str(tmp_path / "alone"), *common]) == 0
    assert infer.main([str(CFG), str(ckpt), str(images), "--out", str(tmp_path / "cfg"), *common]) == 0
    alone = detections(tmp_path / "alone")
    assert len(alone) > 5 and alone == detections(tmp_path / "cfg")
    assert {name for _, _, name, _ in alone} <= set(NAMES)


def test_infer_labels_with_the_checkpoints_names_not_the_configs(tmp_path, varied_model, deploy_cfg, images):
    """The issue's case: a config whose class_names are not the ones trained (inherited COCO names)."""
    cfg = load_config(str(CFG), ["data.class_names=" + repr(COCO_LIKE[:5])])
    ckpt = save(tmp_path / "run.pth", varied_model, cfg, NAMES)
    out = tmp_path / "out"
    argv = [str(CFG), str(ckpt), str(images), "--out", str(out), "--score-thr", "0.03", "--device", "cpu",
            "--cfg-options", "data.class_names=" + repr(COCO_LIKE[:5])]
    assert load_tool("infer").main(argv) == 0
    found = detections(out)
    assert found and all(name == NAMES[label] for _, label, name, _ in found)


def test_names_of_another_count_than_the_head_are_not_used(tmp_path, varied_model, deploy_cfg):
    """An older checkpoint (no meta) whose stored config names 10 classes for a 5-class head: labels by
    index, never a name of another class."""
    cfg = load_config(str(CFG), ["data.class_names=" + repr(COCO_LIKE)])
    ckpt = save(tmp_path / "old.pth", varied_model, cfg)
    state = torch.load(ckpt, weights_only=True)
    assert checkpoint_class_names(state) is None  # its stored config's head has 5 classes
    assert checkpoint_class_names(state, num_classes=10) == COCO_LIKE
    assert load_checkpoint_model(ckpt).class_names is None
    stored = save(tmp_path / "stored.pth", varied_model, deploy_cfg)  # no meta: the stored config's names
    assert load_checkpoint_model(stored).class_names == list(deploy_cfg.data.class_names)


def test_checkpoint_without_a_config_is_one_line_exit_2(tmp_path, varied_model, images, capsys):
    ckpt = save(tmp_path / "bare.pth", varied_model)
    assert load_tool("infer").main([str(ckpt), str(images), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bare.pth has no config inside" in err[0] and "CONFIG CHECKPOINT" in err[0]
    assert not (tmp_path / "o").exists()
    assert load_tool("export").main([str(ckpt), "--no-verify"]) == 2
    assert "has no config inside" in capsys.readouterr().err


@pytest.mark.parametrize("dump, message", [
    ("import os\nos.system('touch {flag}')\n", "which a config dump does not"),
    ("from os import system\nmodel = L(system)(command='touch {flag}')\n", "which a config dump does not"),
    ("from detkit.config import L\nfrom subprocess import run\nmodel = L(run)(args=['touch', '{flag}'])\n",
     "which a config dump does not"),
    ("from detkit.config import L\nfrom detkit.io import atomic_write_text\n"
     "model = L(atomic_write_text)(path='{flag}', text='x')\n", "may not"),
    ("model = __import__('os').system('touch {flag}')\n", "is not a lazy call"),
    ("model = dict(a=open('{flag}', 'w'))\n", "is not a lazy call"),
])
def test_a_stored_config_never_runs_code(tmp_path, varied_model, dump, message):
    flag = tmp_path / "ran"
    ckpt = tmp_path / "evil.pth"
    torch.save({"model": varied_model.state_dict(), "config": dump.format(flag=flag)}, ckpt)
    with pytest.raises(ConfigError, match=message):
        load_checkpoint_model(ckpt)
    assert not flag.exists()


def test_overrides_apply_to_the_stored_config(tmp_path, varied_model, deploy_cfg):
    ckpt = save(tmp_path / "run.pth", varied_model, deploy_cfg, NAMES)
    state = torch.load(ckpt, weights_only=True)
    cfg = stored_config(state, ckpt, ["model.head.score_thr=0.25"])
    assert cfg.model.head.score_thr == 0.25 and "stored config" in cfg._filename
    with pytest.raises(ConfigError, match="stored config"):
        stored_config(state, ckpt, ["model.head.no_such_argument=1"])


def test_export_from_a_checkpoint_alone_writes_its_class_names(tmp_path, varied_model, deploy_cfg):
    from detkit.deploy import OnnxDetector

    cfg = load_config(str(CFG), ["data.class_names=" + repr(COCO_LIKE[:5])])
    ckpt = save(tmp_path / "run.pth", varied_model, cfg, NAMES)
    assert load_tool("export").main([str(ckpt), "--no-verify"]) == 0
    meta = OnnxDetector(tmp_path / "run.onnx").metadata
    assert meta.class_names == NAMES and meta.input_size == (256, 256)
    assert meta.source["config"].endswith("run.pth (stored config)")


def test_test_tool_refuses_val_data_with_other_names_in_label_order(tmp_path, varied_model, deploy_cfg, capsys):
    swapped = [NAMES[1], NAMES[0], *NAMES[2:]]
    ckpt = save(tmp_path / "run.pth", varied_model, deploy_cfg, swapped)
    out = tmp_path / "res.json"
    rc = load_tool("test").main([str(CFG), str(ckpt), "--device", "cpu", "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and not out.exists()
    assert "the same names in another order" in err[-1] and "run.pth on data.val" in err[-1]


@pytest.mark.slow
def test_a_trained_runs_weights_alone_infer_and_export_with_the_datas_names(tmp_path):
    """End to end: one epoch of the YOLOv8 head with ATSS swapped in by one override, then last.pth alone."""
    from detkit.deploy import OnnxDetector

    work = tmp_path / "run"
    cfg = str(ROOT / "tests" / "engine" / "configs" / "shapes_tiny_decoupled.py")
    assert load_tool("train").main([cfg, "--work-dir", str(work), "--no-progress", "--cfg-options", "train.epochs=1",
                                    "train.eval_interval=0", "model.head.loss.assigner=atss"]) == 0
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), make_shape_image(3, 128)[0][..., ::-1])
    out = tmp_path / "out"
    assert load_tool("infer").main([str(work / "last.pth"), str(images), "--out", str(out), "--score-thr", "0",
                                    "--device", "cpu"]) == 0
    found = detections(out)
    assert found and all(name == SHAPE_CLASSES[label] for _, label, name, _ in found)
    assert load_tool("export").main([str(work / "last.pth"), "--out", str(tmp_path / "m.onnx"), "--no-verify"]) == 0
    assert OnnxDetector(tmp_path / "m.onnx").metadata.class_names == list(SHAPE_CLASSES)
