"""A YOLO split without labels, or whose every image is background, is never trained or checked
as if all were well (issue 24, item 2)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from detkit.data import CocoDataset, YoloDataset
from detkit.data.base import ALL_BACKGROUND
from tests.fixtures.tools import load_tool


def images(root: Path, write_img, split: str, n: int = 2) -> Path:
    for i in range(n):
        write_img(root / "images" / split / f"im{i}.jpg")
    return root / "images" / split


def test_yolo_split_without_labels_folder_is_an_error(tmp_path, write_img):
    img_dir = images(tmp_path, write_img, "train")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(img_dir))}: labels folder not found: "
                                         rf"{re.escape(str(tmp_path / 'labels' / 'train'))} "
                                         r"\(every image would be background\); put each image's <name>.txt "
                                         r"there, or create"):
        YoloDataset(str(img_dir), ["a"])


def test_yolo_split_with_an_empty_labels_folder_loads_with_a_counted_warning(tmp_path, write_img, caplog):
    img_dir = images(tmp_path, write_img, "train")
    (tmp_path / "labels" / "train").mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger="detkit.data"):
        ds = YoloDataset(str(img_dir), ["a"])
    assert len(ds) == 2 and dict(ds.problems.counts) == {ALL_BACKGROUND: 1}
    assert ALL_BACKGROUND in caplog.text


def test_yolo_split_whose_label_files_have_no_usable_box_is_a_problem(tmp_path, write_img):
    img_dir = images(tmp_path, write_img, "train")
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "im0.txt").write_text("")
    (tmp_path / "labels" / "train" / "im1.txt").write_text("3 0.5 0.5 0.1 0.1\n")  # class out of range
    ds = YoloDataset(str(img_dir), ["a"])
    assert ds.problems.counts[ALL_BACKGROUND] == 1 and ds.problems.total == 2


def test_a_split_with_one_box_is_not_all_background(tmp_path, write_img):
    img_dir = images(tmp_path, write_img, "train")
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "im1.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    assert not YoloDataset(str(img_dir), ["a"]).problems


def test_coco_json_without_annotations_is_all_background(coco_dir):
    import json

    data = json.loads((coco_dir / "ann.json").read_text())
    data["annotations"] = [a for a in data["annotations"] if a.get("iscrowd")]  # crowd regions are no positives
    (coco_dir / "ann.json").write_text(json.dumps(data))
    ds = CocoDataset(str(coco_dir / "ann.json"), str(coco_dir / "images"))
    assert ds.problems.counts[ALL_BACKGROUND] == 1


def test_check_dataset_reports_missing_labels_and_all_background_splits(tmp_path, write_img, capsys):
    root = tmp_path / "ds"
    images(root, write_img, "train")
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "im0.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    images(root, write_img, "val")  # no labels/val
    images(root, write_img, "test")
    (root / "labels" / "test").mkdir(parents=True)  # labels/test empty: every image is background
    (root / "names.txt").write_text("a\n")
    tool = load_tool("check_dataset")
    assert tool.main([str(root), "--format", "yolo"]) == 1
    out = capsys.readouterr().out
    assert (f"{root / 'images' / 'val'}: labels folder not found: {root / 'labels' / 'val'} (every image would be "
            "background)") in out
    assert f"{root / 'images' / 'test'}: {ALL_BACKGROUND}" in out
    assert "  train: 2 usable images, 1 boxes" in out and "2 problem(s)" in out

    assert tool.main([str(root / "images" / "train"), "--format", "yolo"]) == 0  # the labelled split is clean
    assert "no problems" in capsys.readouterr().out
