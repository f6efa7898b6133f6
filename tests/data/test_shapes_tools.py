"""Shapes generation (determinism, content rules) and tools/check_dataset.py exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detkit.data import ShapesDataset, ensure_shapes_dataset, make_shapes_dataset
from detkit.data.shapes import MAX_COVER, MAX_OBJECTS, SHAPE_CLASSES, make_shape_image
from tests.fixtures.tools import load_tool


def test_shape_image_is_deterministic_by_seed():
    a_img, a_obj = make_shape_image(11, 128)
    b_img, b_obj = make_shape_image(11, 128)
    c_img, _ = make_shape_image(12, 128)
    np.testing.assert_array_equal(a_img, b_img)
    assert [o["label"] for o in a_obj] == [o["label"] for o in b_obj]
    assert not np.array_equal(a_img, c_img)


def test_shape_images_follow_the_content_rules():
    labels = set()
    for seed in range(40):
        img, objs = make_shape_image(seed, 256)
        assert img.shape == (256, 256, 3) and 1 <= len(objs) <= MAX_OBJECTS
        for i, o in enumerate(objs):
            x1, y1, x2, y2 = o["box"]
            assert 0 <= x1 < x2 <= 256 and 0 <= y1 < y2 <= 256 and min(x2 - x1, y2 - y1) >= 7
            for later in objs[i + 1:]:  # later objects cover little of earlier ones
                b = later["box"]
                iw = max(0, min(b[2], x2) - max(b[0], x1))
                ih = max(0, min(b[3], y2) - max(b[1], y1))
                assert iw * ih <= MAX_COVER * (x2 - x1) * (y2 - y1) + 1e-6
            labels.add(o["label"])
    assert labels == set(range(len(SHAPE_CLASSES)))


def test_dataset_written_as_coco_and_identical_for_same_seed(tmp_path):
    a = make_shapes_dataset(str(tmp_path / "a"), train=6, val=3, size=96, seed=4, workers=1)
    b = make_shapes_dataset(str(tmp_path / "b"), train=6, val=3, size=96, seed=4, workers=1)
    ja, jb = json.loads(Path(a["train"]).read_text()), json.loads(Path(b["train"]).read_text())
    assert ja["annotations"] == jb["annotations"] and len(ja["images"]) == 6
    image = Path("train") / "000005.jpg"
    assert (tmp_path / "a" / image).read_bytes() == (tmp_path / "b" / image).read_bytes()
    ds = ShapesDataset(str(tmp_path / "a"), "val", num_train=6, num_val=3, size=96, seed=4)
    assert len(ds) == 3 and ds.class_names == list(SHAPE_CLASSES) and ds.ann_file == a["val"]
    assert sum(len(r["boxes"]) for r in ds.records) == len(json.loads(Path(a["val"]).read_text())["annotations"])


def test_ensure_generates_only_when_missing(tmp_path):
    root = str(tmp_path / "s")
    p = ensure_shapes_dataset(root, train=3, val=2, size=64)
    mtime = Path(p["train"]).stat().st_mtime_ns
    ensure_shapes_dataset(root, train=3, val=2, size=64)
    assert Path(p["train"]).stat().st_mtime_ns == mtime
    ensure_shapes_dataset(root, train=4, val=2, size=64)  # other settings: the set is kept (issue 19)
    assert len(json.loads(Path(p["train"]).read_text())["images"]) == 3
    assert Path(p["train"]).stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="size"):
        make_shapes_dataset(root, train=1, val=1, size=8)


def test_make_shapes_tool(tmp_path, capsys):
    assert load_tool("make_shapes").main([str(tmp_path), "--train", "2", "--val", "1", "--size", "64"]) == 0
    assert (tmp_path / "annotations" / "instances_val.json").is_file()
    assert "3 images" in capsys.readouterr().out


def test_check_dataset_exit_codes(coco_dir, capsys):
    tool = load_tool("check_dataset")
    assert tool.main([str(coco_dir / "ann.json"), "--format", "coco", "--images", str(coco_dir / "images")]) == 0
    assert "no problems" in capsys.readouterr().out
    (coco_dir / "images" / "2.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    assert tool.main([str(coco_dir / "ann.json"), "--format", "coco", "--images", str(coco_dir / "images")]) == 1
    out = capsys.readouterr().out
    assert "2.jpg: truncated JPEG" in out and "2 problem(s)" in out
    assert "1  annotation of a skipped image" in out  # the per-reason table
    assert tool.main([str(coco_dir / "nope.json"), "--format", "coco"]) == 2  # a missing path: bad argument
    assert tool.main([str(coco_dir / "images"), "--format", "yolo"]) == 2  # no class names anywhere


def test_check_dataset_yolo_reports_each_line(tmp_path, write_img, capsys):
    write_img(tmp_path / "images" / "t" / "1.jpg")
    (tmp_path / "labels" / "t").mkdir(parents=True)
    (tmp_path / "labels" / "t" / "1.txt").write_text("0 0.5 0.5 0.1 0.1\n7 0.5 0.5 0.1 0.1\n0 0.5\n")
    (tmp_path / "names.txt").write_text("a\nb\n")
    tool = load_tool("check_dataset")
    assert tool.main([str(tmp_path / "images" / "t"), "--format", "yolo"]) == 1
    out = capsys.readouterr().out
    assert "1.txt: class id out of range 0..1" in out and "1.txt:3: label line has 2 fields" in out


def test_check_dataset_coco128_is_clean(coco128, capsys):
    tool = load_tool("check_dataset")
    assert tool.main([str(coco128 / "images" / "train2017"), "--format", "yolo"]) == 0
    assert "128 usable images, 929 boxes" in capsys.readouterr().out
