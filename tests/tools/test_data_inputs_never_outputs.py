"""``--data`` inputs are never outputs (issue 24.1, found in QA): ``tools/test.py --data data.yaml --out
data.yaml`` replaced the user's data.yaml with detections (exit 0), and a YOLO set's labels folder, which a
``YoloDataset`` reads without naming it (``images`` -> ``labels``), was not protected either."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from detkit.config import L
from detkit.data import YoloDataset
from detkit.engine.output_paths import config_input_paths
from tests.fixtures.tools import load_tool
from tests.tools.test_inputs_never_outputs import SHAPES_CFG, one_error_line, tiny_checkpoint


@pytest.fixture
def yolo_set(tmp_path) -> Path:
    """A YOLO root with two labelled images per split and its data.yaml; returns the yaml."""
    root = tmp_path / "mydata"
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(root / "images" / split / f"im{i}.png"), rng.integers(0, 255, (64, 64, 3), np.uint8))
            (root / "labels" / split / f"im{i}.txt").write_text(f"{i} 0.5 0.5 0.4 0.4\n")
    yaml = root / "data.yaml"
    yaml.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: a\n  1: b\n")
    return yaml


def files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_config_input_paths_lists_a_yolo_sets_derived_labels_folder(yolo_set):
    root = yolo_set.parent
    node = {"dataset": L(YoloDataset)(img_dir=str(root / "images" / "val"), class_names=["a", "b"])}
    assert config_input_paths(node) == [root / "labels" / "val", root / "images" / "val"]
    # a list of image folders: each one's labels folder
    node = L(YoloDataset)(img_dir=[str(root / "images" / "train"), str(root / "images" / "val")], class_names=["a"])
    assert config_input_paths(node) == [root / "labels" / "train", root / "labels" / "val",
                                        root / "images" / "train", root / "images" / "val"]
    # a label_dir given is named like any other path; nothing is derived beside it
    node = L(YoloDataset)(img_dir=str(root / "images" / "val"), label_dir=str(root / "labels" / "train"),
                          class_names=["a"])
    assert config_input_paths(node) == [root / "images" / "val", root / "labels" / "train"]


def test_test_with_data_refuses_an_out_that_is_the_data_yaml_or_inside_the_set(tmp_path, yolo_set, capsys,
                                                                             monkeypatch):
    import detkit.engine.inference as inference

    def no_work(*args, **kwargs):
        raise AssertionError("the evaluation ran before the output paths were checked")

    monkeypatch.setattr(inference, "evaluate_dataset", no_work)
    root = yolo_set.parent
    before = files(root)
    ckpt = tiny_checkpoint(tmp_path / "m.pth")
    label = root / "labels" / "val" / "im0.txt"
    cases = [(yolo_set, yolo_set, f"--out {yolo_set} is the input file {yolo_set}: it would be overwritten"),
             (yolo_set, label, f"--out {label} lies inside the input folder {root / 'labels' / 'val'}"),
             (root, root / "results.json", f"--out {root / 'results.json'} lies inside the input folder {root}")]
    for data, out, message in cases:
        argv = [SHAPES_CFG, str(ckpt), "--data", str(data), "--img-size", "64", "--device", "cpu", "--out", str(out)]
        assert load_tool("test").main(argv) == 2, out
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert files(root) == before


def test_train_with_data_refuses_a_work_dir_in_the_labels_folder(tmp_path, yolo_set, capsys):
    root = yolo_set.parent
    before = files(root)
    work = root / "labels" / "train"
    argv = [SHAPES_CFG, "--data", str(yolo_set), "--img-size", "64", "--device", "cpu", "--work-dir", str(work)]
    assert load_tool("train").main(argv) == 2
    assert one_error_line(capsys) == (f"error: --work-dir {work} is the input folder {work}: it would be "
                                      "overwritten; pick another output path")
    assert files(root) == before
