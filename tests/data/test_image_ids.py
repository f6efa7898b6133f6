"""Image ids of file-named datasets are unique by construction (issue 24, item 2)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from detkit.data import YoloDataset
from detkit.data.base import stem_image_ids
from detkit.evaluation import COCOEvaluator


def yolo_split(tmp_path: Path, write_img, stems: list[str]) -> Path:
    """One image per stem with one box whose position differs per image; names.txt 'a'."""
    img_dir, label_dir = tmp_path / "images" / "val", tmp_path / "labels" / "val"
    label_dir.mkdir(parents=True)
    for k, stem in enumerate(stems):
        write_img(img_dir / f"{stem}.jpg", w=100, h=100)
        (label_dir / f"{stem}.txt").write_text(f"0 {0.1 + 0.05 * k:.2f} 0.5 0.1 0.2\n")
    return img_dir


@pytest.mark.parametrize("stems,expected", [
    (["0007", "0009", "12"], [7, 9, 12]),                      # numbers kept (coco128's COCO ids)
    (["001", "01", "1", "10", "2"], [0, 1, 2, 3, 4]),           # 001, 01, 1 read as 1: positions
    (["a", "b", "c"], [0, 1, 2]),
    (["1", "x"], [0, 1]),                                     # not all numbers
    (["²", "3"], [0, 1]),                                     # str.isdigit but not int-parsable
    (["99999999999999999999", "1"], [0, 1]),                  # beyond int64
    (["5", "5", "6"], [5, 5, 6]),                             # an equal stem (a.jpg + a.png) is a duplicate
    (["a", "a", "b"], [0, 0, 2]),
    ([], []),
])
def test_stem_image_ids(stems, expected):
    assert stem_image_ids(stems) == expected


def test_voc_stems_that_give_the_same_number_get_positions(caplog):
    assert stem_image_ids(["2008_000008", "2008_000009"], strip="_") == [2008000008, 2008000009]
    with caplog.at_level(logging.WARNING, logger="detkit.data"):
        assert stem_image_ids(["2008_000008", "2008_0000_08"], "VOC2012", strip="_") == [0, 1]
    assert "VOC2012: file stems '2008_000008' and '2008_0000_08' are the same number" in caplog.text


def test_yolo_1_01_001_get_distinct_ids_and_evaluate_right(tmp_path, write_img, caplog):
    stems = [str(i) for i in range(1, 14)] + ["01", "001", "0001"]  # 16 images, 13 numbers
    with caplog.at_level(logging.WARNING, logger="detkit.data"):
        ds = YoloDataset(str(yolo_split(tmp_path, write_img, stems)), ["a"])
    assert len(ds) == 16 and not ds.problems
    ids = [r["image_id"] for r in ds.records]
    assert ids == list(range(16))  # positions in sorted file-name order: 0001, 001, 01, 1, 10, ...
    assert [Path(r["img_path"]).stem for r in ds.records][:4] == ["0001", "001", "01", "1"]
    assert "file stems '0001' and '001' are the same number" in caplog.text
    assert [ds[i]["image_id"] for i in range(3)] == [0, 1, 2]

    gt = ds.coco_dict()
    assert sorted(im["id"] for im in gt["images"]) == list(range(16))
    dets = [dict(image_id=a["image_id"], category_id=a["category_id"], bbox=a["bbox"], score=0.9)
            for a in gt["annotations"]]
    metrics = COCOEvaluator(gt, backend="pycocotools").evaluate(dets)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AR100"] == pytest.approx(1.0)


def test_yolo_ids_are_deterministic(tmp_path, write_img):
    img_dir = yolo_split(tmp_path, write_img, ["b", "a", "c", "01", "1"])
    first = [(r["img_path"], r["image_id"]) for r in YoloDataset(str(img_dir), ["a"]).records]
    second = [(r["img_path"], r["image_id"]) for r in YoloDataset(str(img_dir), ["a"]).records]
    assert first == second and [i for _, i in first] == [0, 1, 2, 3, 4]


def test_yolo_unique_numeric_stems_keep_their_numbers(tmp_path, write_img):
    ds = YoloDataset(str(yolo_split(tmp_path, write_img, ["000000000009", "000000000025", "30"])), ["a"])
    assert [r["image_id"] for r in ds.records] == [9, 25, 30]
