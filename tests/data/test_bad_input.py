"""Bad input (issue #9): every case of the corpus in tests/data/bad_corpus.py is handled as
docs/reliability.md says, and every skipped item is counted with its reason."""

from __future__ import annotations

import logging
import os
import re
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from detkit.data import CocoDataset, LetterBox, YoloDataset, build_dataloader, collate
from detkit.data.imageio import ALPHA_BACKGROUND, TOO_LARGE, ImageReadError, load_image, reduction_for
from tests.data.bad_corpus import HUGE_H, HUGE_W, MANY, write_unusable_coco_jsons
from tests.fixtures.tools import load_tool

MAX_SIZE = 640


def yolo(corpus, **kw) -> YoloDataset:
    return YoloDataset(str(corpus.img_dir), str(corpus.names), **{"max_size": MAX_SIZE, **kw})


def coco(corpus, **kw) -> CocoDataset:
    return CocoDataset(str(corpus.ann_file), str(corpus.img_dir), **{"max_size": MAX_SIZE, **kw})


def sample_of(ds, name: str) -> dict:
    index = next(i for i, r in enumerate(ds.records) if os.path.basename(r["img_path"]) == name)
    return ds.load_sample(index)


def records_total(records: list[tuple[str, str]]) -> int:
    """Problems the records stand for (a record of ``n`` alike ends with ``(xn)``)."""
    return sum(int(m.group(1)) if (m := re.search(r"\(x(\d+)\)$", r)) else 1 for _, r in records)


def case_boxes(case) -> tuple[np.ndarray, np.ndarray]:
    arr = np.array([b[1:] for b in case.boxes], np.float32).reshape(-1, 4)
    return arr, np.array([b[0] for b in case.boxes], np.int64)


# ------------------------------------------------------------------------------------------------
# every problem counted, by reason, exactly
# ------------------------------------------------------------------------------------------------


def test_yolo_index_time_problems_exact(bad_corpus):
    ds = yolo(bad_corpus)
    assert dict(ds.problems.counts) == dict(bad_corpus.yolo_index)
    assert len(ds) == bad_corpus.yolo_usable
    assert records_total(ds.problems.records) == ds.problems.total  # every problem has its record
    assert all(where and reason for where, reason in ds.problems.records)


def test_coco_index_time_problems_exact(bad_corpus):
    ds = coco(bad_corpus)
    assert dict(ds.problems.counts) == dict(bad_corpus.coco_index)
    assert records_total(ds.problems.records) == ds.problems.total
    assert len(ds) == bad_corpus.coco_usable
    assert ds.num_classes == 80  # the category without an id is not a class


@pytest.mark.parametrize("make", [yolo, coco], ids=["yolo", "coco"])
def test_decode_problems_counted_when_read_and_replaced(bad_corpus, make):
    ds = make(bad_corpus)
    index, load = (bad_corpus.yolo_index, bad_corpus.yolo_load) if make is yolo else (
        bad_corpus.coco_index, bad_corpus.coco_load)
    paths = [ds.load_sample(i)["img_path"] for i in range(len(ds))]
    assert dict(ds.problems.counts) == dict(index + load)
    assert not any(p.endswith("corrupt.png") for p in paths)  # replaced by other samples
    for i in range(len(ds)):  # known bad: not read or counted again
        ds.load_sample(i)
    assert dict(ds.problems.counts) == dict(index + load)


def test_check_images_counts_and_drops_what_cannot_be_used(bad_corpus):
    ds = coco(bad_corpus, check_images=True)
    assert dict(ds.problems.counts) == dict(bad_corpus.coco_index + bad_corpus.coco_load)
    assert len(ds) == bad_corpus.coco_usable - sum(bad_corpus.coco_load.values())
    where = [w for w, r in ds.problems.records if r.startswith("annotated width/height match the stored")]
    assert where == [str(bad_corpus.img_dir / "exif_rot.jpg") + " (file 64x96, annotated 96x64 (h x w))"]


@pytest.mark.parametrize("name", ["no_annotations", "images_not_list", "no_category_id", "no_file_names",
                                  "not_json"])
def test_unusable_coco_json_raises_naming_file_and_field(tmp_path, name):
    path, pattern = write_unusable_coco_jsons(tmp_path)[name]
    with pytest.raises(ValueError, match=pattern):
        CocoDataset(str(path), str(tmp_path))


# ------------------------------------------------------------------------------------------------
# pixels: 3-channel uint8 RGB whatever the file holds
# ------------------------------------------------------------------------------------------------


def test_alpha_is_composited_over_grey(bad_corpus):
    img = sample_of(yolo(bad_corpus), "alpha.png")["img"]
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[:, :30], ALPHA_BACKGROUND)  # transparent
    np.testing.assert_array_equal(img[:, 32:], np.broadcast_to([255, 0, 0], (48, 32, 3)))  # opaque red
    seam = [(255 * 128 + ALPHA_BACKGROUND * 127 + 127) // 255, (ALPHA_BACKGROUND * 127 + 127) // 255]
    np.testing.assert_array_equal(img[:, 30:32], np.broadcast_to([seam[0], seam[1], seam[1]], (48, 2, 3)))


def test_grayscale_becomes_three_equal_channels(bad_corpus):
    img = sample_of(yolo(bad_corpus), "gray.png")["img"]
    assert img.shape == (48, 64, 3)
    expected = np.tile(np.arange(64, dtype=np.uint8)[None, :] * 4, (48, 1))
    for c in range(3):
        np.testing.assert_array_equal(img[:, :, c], expected)


def test_16_bit_png_is_scaled_to_8_bit_rounding(bad_corpus):
    img = sample_of(yolo(bad_corpus), "deep16.png")["img"]
    assert img.shape == (32, 48, 3) and img.dtype == np.uint8
    assert (img[..., 0] == 255).all() and (img[..., 1] == 128).all()  # 65535, 257 * 128
    assert (img[:, :24, 2] == 7).all() and (img[:, 24:, 2] == 8).all()  # 7.498 and 7.502


def test_one_pixel_image_trains_through_letterbox_and_collate(bad_corpus):
    s = sample_of(yolo(bad_corpus), "tiny.png")
    np.testing.assert_array_equal(s["img"], [[[10, 20, 30]]])
    np.testing.assert_allclose(s["boxes"], [[0, 0, 1, 1]])
    out = LetterBox(32)(s)
    np.testing.assert_allclose(out["boxes"], [[0, 0, 32, 32]])
    assert collate([out])["gt_mask"].sum() == 1


# ------------------------------------------------------------------------------------------------
# EXIF orientation: pixels and boxes agree
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [yolo, coco], ids=["yolo", "coco"])
def test_exif_rotated_boxes_land_on_the_rotated_objects(bad_corpus, make):
    s = sample_of(make(bad_corpus), "exif_rot.jpg")
    assert s["img"].shape == (64, 96, 3) and s["ori_size"] == (64, 96)
    np.testing.assert_allclose(s["boxes"], [[10, 8, 40, 30], [60, 36, 90, 60]], atol=1e-3)
    for (x1, y1, x2, y2), colour in zip(s["boxes"].astype(int), ([255, 0, 0], [0, 0, 255])):
        inside = s["img"][y1 + 2:y2 - 2, x1 + 2:x2 - 2].reshape(-1, 3).mean(0)
        np.testing.assert_allclose(inside, colour, atol=12)


def test_exif_orientation_off_reads_stored_pixels(bad_corpus):
    s = sample_of(yolo(bad_corpus, exif_orientation=False), "exif_rot.jpg")
    assert s["img"].shape == (96, 64, 3) and s["ori_size"] == (96, 64)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pil(tmp_path, orientation):
    stored = np.random.default_rng(orientation).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    Image.fromarray(stored).save(path, exif=exif)
    loaded = load_image(str(path))
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    np.testing.assert_array_equal(loaded.img, expected)
    assert loaded.ori_size == expected.shape[:2] and loaded.orientation == orientation


def test_coco128_photo_with_exif_rotation(bad_corpus):
    if not bad_corpus.with_coco128:
        pytest.skip("shared coco128 data not present")
    case = bad_corpus.cases["coco_exif.jpg"]
    s = sample_of(yolo(bad_corpus), "coco_exif.jpg")
    w, h = case.size
    assert s["img"].shape == (h, w, 3)
    boxes, labels = case_boxes(case)
    np.testing.assert_allclose(s["boxes"], np.clip(boxes, 0, [w, h, w, h]), atol=0.05)
    np.testing.assert_array_equal(s["labels"], labels)


# ------------------------------------------------------------------------------------------------
# sizes: huge, many boxes
# ------------------------------------------------------------------------------------------------


def test_huge_image_is_shrunk_on_load_with_its_boxes(bad_corpus):
    s = sample_of(yolo(bad_corpus), "huge.jpg")
    assert s["img"].shape == (480, 640, 3)
    assert s["ori_size"] == (HUGE_H, HUGE_W) and s["scale_factor"] == pytest.approx((0.08, 0.08))
    np.testing.assert_allclose(s["boxes"], [[160, 120, 480, 360]], atol=1e-3)
    np.testing.assert_allclose(s["img"].reshape(-1, 3).mean(0), [40, 90, 160], atol=3)  # flat colour, RGB
    out = LetterBox(320)(s)  # the letterbox composes with the load-time scale
    assert out["scale_factor"] == pytest.approx((0.04, 0.04))


def test_jpeg_reduction_keeps_at_least_max_size():
    assert reduction_for(8000, 640) == 8 and reduction_for(8000, 1280) == 4 and reduction_for(8000, 4096) == 1
    assert reduction_for(8000, None) == 1 and reduction_for(639, 640) == 1


def test_too_many_pixels_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"  # 20000 x 20000 declared in the header; pixels never decoded
    ok, buf = cv2.imencode(".png", np.zeros((1, 1), np.uint8))
    data = bytearray(buf.tobytes())
    data[16:24] = (20000).to_bytes(4, "big") + (20000).to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # the IHDR chunk's checksum
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match="too large"):
        load_image(str(path))
    assert TOO_LARGE.startswith("image too large")


def test_five_hundred_boxes_in_one_image(bad_corpus):
    s = sample_of(yolo(bad_corpus), "many.jpg")
    boxes, labels = case_boxes(bad_corpus.cases["many.jpg"])
    assert len(s["boxes"]) == MANY
    np.testing.assert_allclose(s["boxes"], boxes, atol=1e-3)
    b = collate([s, sample_of(yolo(bad_corpus), "tiny.png")])
    assert b["gt_boxes"].shape == (2, MANY, 4) and b["gt_mask"].sum() == MANY + 1


# ------------------------------------------------------------------------------------------------
# labels
# ------------------------------------------------------------------------------------------------


def test_bad_label_rows_dropped_good_and_clipped_kept_duplicates_removed(bad_corpus):
    s = sample_of(yolo(bad_corpus), "garbage.jpg")
    boxes, labels = case_boxes(bad_corpus.cases["garbage.jpg"])
    np.testing.assert_allclose(s["boxes"], boxes, atol=1e-3)
    np.testing.assert_array_equal(s["labels"], labels)


def test_problem_records_name_the_label_line(bad_corpus):
    records = yolo(bad_corpus).problems.records
    garbage = str(bad_corpus.label_dir / "garbage.txt")
    assert (f"{garbage}:{len(bad_corpus.cases['garbage.jpg'].boxes)}",
            "label line has 4 fields, expected 5 (class cx cy w h) or a polygon") in records


# ------------------------------------------------------------------------------------------------
# reports reach the main process and the tools
# ------------------------------------------------------------------------------------------------


def test_problems_found_in_loader_workers_reach_the_main_process(bad_corpus, caplog):
    ds = coco(bad_corpus, max_size=128)
    expected = dict(bad_corpus.coco_index + bad_corpus.coco_load)
    loader = build_dataloader(ds, batch_size=4, num_workers=1, shuffle=False, persistent_workers=False)
    with caplog.at_level(logging.WARNING, logger="detkit.data"):
        carried = [p for batch in loader for p in batch["problems"]]
    assert sorted(r for _, r, _ in carried) == sorted(bad_corpus.coco_load.elements())
    assert dict(ds.problems.counts) == expected
    assert "3 new problem(s) found while loading this epoch" in caplog.text
    for batch in loader:  # workers started again: known bad indices are skipped, nothing counted twice
        assert batch["problems"] == []
    assert dict(ds.problems.counts) == expected


def test_check_dataset_tool_lists_every_problem(bad_corpus, capsys):
    tool = load_tool("check_dataset")
    args = [str(bad_corpus.img_dir), "--format", "yolo", "--names", str(bad_corpus.names), "--max-size", "640"]
    assert tool.main(args) == 1
    out = capsys.readouterr().out
    expected = bad_corpus.yolo_index + bad_corpus.yolo_load
    assert f"{sum(expected.values())} problem(s)" in out
    assert f"{bad_corpus.img_dir / 'corrupt.png'}: image cannot be decoded" in out
    for reason, n in expected.items():
        assert f"{n}  {reason}" in out  # the per-reason table


def test_browse_dataset_summarises_the_problems(bad_corpus, tmp_path, capsys):
    cfg = tmp_path / "bad.py"
    cfg.write_text(
        "from detkit.config import L\n"
        "from detkit.data import LetterBox, YoloDataset\n"
        f"data = dict(train=dict(dataset=L(YoloDataset)(img_dir={str(bad_corpus.img_dir)!r}, "
        f"class_names={str(bad_corpus.names)!r}, max_size=256, pipeline=[L(LetterBox)(size=64)])))\n"
    )
    tool = load_tool("browse_dataset")
    assert tool.main([str(cfg), "--num", "100", "--out", str(tmp_path / "out")]) == 0
    assert len(list((tmp_path / "out").glob("*.jpg"))) == bad_corpus.yolo_usable
    last = capsys.readouterr().out.strip().splitlines()[-1]
    total = sum((bad_corpus.yolo_index + bad_corpus.yolo_load).values())
    assert last.startswith(f"{total} problem(s)") and "1 x image cannot be decoded" in last
