"""YoloDataset and VocDataset on hand-made fixtures and on coco128."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detkit.data import VocDataset, YoloDataset, load_class_names


def yolo_dir(tmp_path: Path, write_img, labels: dict[str, str]) -> Path:
    for stem, text in labels.items():
        write_img(tmp_path / "images" / "train" / f"{stem}.jpg", w=100, h=50)
        if text is not None:
            (tmp_path / "labels" / "train").mkdir(parents=True, exist_ok=True)
            (tmp_path / "labels" / "train" / f"{stem}.txt").write_text(text)
    (tmp_path / "names.txt").write_text("a\nb\n")
    return tmp_path / "images" / "train"


def test_yolo_boxes_in_pixels_and_numeric_ids(tmp_path, write_img):
    d = yolo_dir(tmp_path, write_img, {"0007": "1 0.5 0.5 0.2 0.4\n0 0.1 0.1 0.2 0.2\n", "0009": None})
    ds = YoloDataset(str(d), str(tmp_path / "names.txt"))
    assert ds.class_names == ["a", "b"] and len(ds) == 2
    s = ds[0]
    assert s["image_id"] == 7
    np.testing.assert_allclose(s["boxes"], [[40, 15, 60, 35], [0, 0, 20, 10]], atol=1e-4)
    np.testing.assert_array_equal(s["labels"], [1, 0])
    s = ds[1]  # no label file: background
    assert s["image_id"] == 9 and s["boxes"].shape == (0, 4)
    assert not ds.problems


def test_yolo_polygon_line_is_boxed(tmp_path, write_img):
    d = yolo_dir(tmp_path, write_img, {"1": "0 0.1 0.2 0.5 0.2 0.3 0.8\n"})
    s = YoloDataset(str(d), ["a", "b"])[0]
    np.testing.assert_allclose(s["boxes"], [[10, 10, 50, 40]], atol=1e-4)


def test_yolo_bad_lines_counted_good_ones_kept(tmp_path, write_img):
    text = "\n".join([
        "0 0.5 0.5 0.2 0.2",      # good
        "0 0.5 0.5 0.2",          # 4 fields
        "0 0.5 0.5 0.2 0.2 0.1",  # 6 fields
        "x 0.5 0.5 0.2 0.2",      # not a number
        "0 0.5 abc 0.2 0.2",      # not a number
        "5 0.5 0.5 0.2 0.2",      # class out of range
        "-1 0.5 0.5 0.2 0.2",     # class out of range
        "0.5 0.5 0.5 0.2 0.2",    # class not an integer
        "0 nan 0.5 0.2 0.2",      # NaN
        "0 0.5 inf 0.2 0.2",      # inf
        "0 0.5 0.5 0 0.2",        # zero width
        "1 1.5 1.5 0.2 0.2",      # outside the image
        "1 0.95 0.5 0.3 0.2",     # partly outside: clipped, kept
    ])
    d = yolo_dir(tmp_path, write_img, {"1": text})
    ds = YoloDataset(str(d), ["a", "b"])
    c = ds.problems.counts
    assert c["label line has 4 fields, expected 5 (class cx cy w h) or a polygon"] == 1
    assert c["label line has 6 fields, expected 5 (class cx cy w h) or a polygon"] == 1
    assert c["label line has a field that is not a number"] == 2
    assert c["class id out of range 0..1"] == 2
    assert c["class id is not an integer"] == 1
    assert c["box with NaN/inf coordinates"] == 2
    assert c["box with non-positive width or height"] == 1
    assert c["box outside the image (empty after clipping)"] == 1
    assert c["box partly outside the image (clipped)"] == 1
    s = ds[0]
    np.testing.assert_allclose(s["boxes"], [[40, 20, 60, 30], [80, 20, 100, 30]], atol=1e-4)
    np.testing.assert_array_equal(s["labels"], [0, 1])
    assert any(p.endswith("1.txt:2") for p, _ in ds.problems.records)  # file:line recorded


def test_yolo_duplicate_stem_and_orphan_label(tmp_path, write_img):
    d = yolo_dir(tmp_path, write_img, {"a": "0 0.5 0.5 0.2 0.2\n"})
    write_img(d / "a.png")
    (tmp_path / "labels" / "train" / "zzz.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    ds = YoloDataset(str(d), ["a", "b"])
    assert len(ds) == 1 and ds[0]["image_id"] == 0  # non-numeric stems: index ids
    assert ds.problems.counts["duplicate image id: another image has the same file stem (first kept)"] == 1
    assert ds.problems.counts["label file has no image"] == 1


def test_yolo_empty_folder_raises(tmp_path):
    (tmp_path / "images" / "x").mkdir(parents=True)
    with pytest.raises(ValueError, match="no usable images"):
        YoloDataset(str(tmp_path / "images" / "x"), ["a"])


def test_class_names_sources(tmp_path):
    (tmp_path / "d.yaml").write_text("names:\n  0: x\n  1: y\n")
    assert load_class_names(str(tmp_path / "d.yaml")) == ["x", "y"]
    assert load_class_names({1: "b", 0: "a"}) == ["a", "b"]
    with pytest.raises(ValueError, match="0..1"):
        load_class_names({0: "a", 2: "b"})


def test_yolo_coco128_counts_match_json(coco128):
    ds = YoloDataset(str(coco128 / "images" / "train2017"), str(coco128 / "names.txt"))
    assert len(ds) == 128 and len(ds.class_names) == 80
    assert sum(len(r["boxes"]) for r in ds.records) == 929
    assert not ds.problems
    assert ds[0]["image_id"] == 9


def write_voc(root: Path, write_img) -> None:
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    write_img(root / "JPEGImages" / "2007_000001.jpg", w=80, h=60)
    (root / "Annotations" / "2007_000001.xml").write_text("""<annotation><filename>2007_000001.jpg</filename>
<size><width>80</width><height>60</height><depth>3</depth></size>
<object><name>dog</name><difficult>0</difficult><bndbox><xmin>11</xmin><ymin>21</ymin><xmax>40</xmax><ymax>50</ymax></bndbox></object>
<object><name>cat</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>10</ymax></bndbox></object>
<object><name>unicorn</name><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>10</ymax></bndbox></object>
<object><name>cat</name><bndbox><xmin>5</xmin><ymin>oops</ymin><xmax>10</xmax><ymax>10</ymax></bndbox></object>
</annotation>""")
    (root / "Annotations" / "2007_000002.xml").write_text("<annotation><broken>")
    (root / "ImageSets" / "Main" / "train.txt").write_text("2007_000001\n2007_000002\n2007_000001\n")


def test_voc_difficult_is_ignore_and_problems_counted(tmp_path, write_img):
    write_voc(tmp_path, write_img)
    ds = VocDataset(str(tmp_path), split="train")
    assert len(ds) == 1
    s = ds[0]
    assert s["image_id"] == 2007000001
    np.testing.assert_allclose(s["boxes"], [[10, 20, 40, 50]])
    np.testing.assert_array_equal(s["labels"], [ds.class_names.index("dog")])
    np.testing.assert_allclose(s["ignore_boxes"], [[0, 0, 10, 10]])
    c = ds.problems.counts
    assert c["unknown class name 'unicorn'"] == 1
    assert c["bndbox missing or not numbers"] == 1
    assert c["duplicate image id (listed twice; first kept)"] == 1
    assert sum(n for r, n in c.items() if r.startswith("cannot parse annotation xml")) == 1


def test_voc_missing_split_list_raises(tmp_path, write_img):
    write_voc(tmp_path, write_img)
    with pytest.raises(ValueError, match="nosuch.txt"):
        VocDataset(str(tmp_path), split="nosuch")
    assert len(VocDataset(str(tmp_path), split=None)) == 1
