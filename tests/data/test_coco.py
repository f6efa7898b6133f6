"""CocoDataset: label mapping, crowd -> ignore, background images, bad input counted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detkit.data import CocoDataset


def load(d: Path, **kw) -> CocoDataset:
    return CocoDataset(str(d / "ann.json"), str(d / "images"), **kw)


def test_category_ids_map_to_sorted_contiguous_labels(coco_dir):
    ds = load(coco_dir)
    assert ds.cat_ids == [2, 5]
    assert ds.class_names == ["dog", "cat"]
    s = ds[0]
    np.testing.assert_array_equal(s["labels"], [1, 0])
    np.testing.assert_allclose(s["boxes"], [[10, 10, 30, 20], [0, 0, 5, 5]])
    assert [ds.cat_ids[i] for i in s["labels"]] == [5, 2]


def test_crowd_boxes_become_ignore_regions_never_positives(coco_dir):
    ds = load(coco_dir)
    np.testing.assert_allclose(ds[0]["ignore_boxes"], [[30, 20, 40, 30]])
    s = ds[1]
    assert s["boxes"].shape == (0, 4) and s["labels"].shape == (0,)
    np.testing.assert_allclose(s["ignore_boxes"], [[1, 2, 4, 6]])


def test_background_images_kept_unless_filtered(coco_dir):
    assert len(load(coco_dir)) == 3
    ds = load(coco_dir, filter_empty=True)
    assert [r["image_id"] for r in ds.records] == [1]


def test_sample_metadata(coco_dir):
    s = load(coco_dir)[2]
    assert s["img"].shape == (48, 64, 3) and s["img"].dtype == np.uint8
    assert s["image_id"] == 3 and s["ori_size"] == (48, 64)
    assert s["scale_factor"] == (1.0, 1.0) and s["pad"] == (0.0, 0.0)


def _edit(d: Path, fn) -> None:
    data = json.loads((d / "ann.json").read_text())
    fn(data)
    (d / "ann.json").write_text(json.dumps(data))


def test_bad_annotations_are_skipped_and_counted(coco_dir):
    def corrupt(data):
        anns = data["annotations"]
        anns.append({"id": 10, "image_id": 1, "category_id": 5, "bbox": [float("nan"), 0, 5, 5], "iscrowd": 0})
        anns.append({"id": 11, "image_id": 1, "category_id": 5, "bbox": [5, 5, 0, 4], "iscrowd": 0})
        anns.append({"id": 12, "image_id": 1, "category_id": 99, "bbox": [5, 5, 4, 4], "iscrowd": 0})
        anns.append({"id": 13, "image_id": 1, "category_id": 5, "bbox": [100, 100, 4, 4], "iscrowd": 0})
        anns.append({"id": 14, "image_id": 1, "category_id": 5, "bbox": [50, 40, 30, 30], "iscrowd": 0})
        anns.append({"id": 15, "image_id": 77, "category_id": 5, "bbox": [1, 1, 4, 4], "iscrowd": 0})
        anns.append({"id": 16, "image_id": 1, "category_id": 5, "bbox": "oops", "iscrowd": 0})
    _edit(coco_dir, corrupt)
    ds = load(coco_dir)
    c = ds.problems.counts
    assert c["box with NaN/inf coordinates"] == 1
    assert c["box with non-positive width or height"] == 1
    assert c["annotation with an unknown category_id"] == 1
    assert c["box outside the image (empty after clipping)"] == 1
    assert c["box partly outside the image (clipped)"] == 1
    assert c["annotation for an unknown image id"] == 1
    assert c["annotation bbox is not 4 numbers"] == 1
    # the clipped box is kept, clipped to the 64x48 image
    np.testing.assert_allclose(ds[0]["boxes"][-1], [50, 40, 64, 48])
    assert len(ds[0]["boxes"]) == 3


def test_duplicate_image_id_missing_and_empty_files_counted(coco_dir):
    (coco_dir / "images" / "3.jpg").write_bytes(b"")
    def corrupt(data):
        data["images"].append({"id": 1, "file_name": "2.jpg", "width": 64, "height": 48})
        data["images"].append({"id": 9, "file_name": "missing.jpg", "width": 64, "height": 48})
    _edit(coco_dir, corrupt)
    ds = load(coco_dir)
    c = ds.problems.counts
    assert c["duplicate image id (first entry kept)"] == 1
    assert c["missing image file"] == 1
    assert c["zero-byte image file"] == 1
    assert sorted(r["image_id"] for r in ds.records) == [1, 2]
    assert "missing.jpg" in "".join(p for p, _ in ds.problems.records)


@pytest.mark.parametrize("content", ["[1, 2]", '{"images": []}', "not json"])
def test_json_that_is_not_coco_raises_naming_the_file(tmp_path, content):
    (tmp_path / "x.json").write_text(content)
    with pytest.raises(ValueError, match="x.json"):
        CocoDataset(str(tmp_path / "x.json"), str(tmp_path))


def test_nothing_usable_raises_naming_the_path(coco_dir):
    for i in (1, 2, 3):
        (coco_dir / "images" / f"{i}.jpg").unlink()
    with pytest.raises(ValueError, match=r"ann\.json: no usable images"):
        load(coco_dir)


def test_unreadable_image_at_getitem_is_replaced_and_counted(coco_dir):
    ds = load(coco_dir)
    (coco_dir / "images" / "1.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")  # truncated JPEG
    s = ds[0]
    assert s["image_id"] in (2, 3)
    assert ds.problems.counts["truncated JPEG (no end-of-image marker)"] == 1
    s = ds[0]  # known bad: not read again, not counted again
    assert ds.problems.total == 1


def test_undecodable_image_counted(coco_dir):
    ds = load(coco_dir)
    (coco_dir / "images" / "2.jpg").write_bytes(b"this is not an image at all")
    assert ds[1]["image_id"] != 2
    assert ds.problems.counts["image cannot be decoded"] == 1


def test_coco128_json_counts(coco128):
    ds = CocoDataset(str(coco128 / "annotations" / "instances_train2017.json"), str(coco128 / "images" / "train2017"))
    assert len(ds) == 128
    assert sum(len(r["boxes"]) for r in ds.records) == 929
    assert sum(len(r["ignore_boxes"]) for r in ds.records) == 10
    assert len(ds.cat_ids) == 80 and ds.class_names[0] == "person"
    assert not ds.problems
