"""Evaluation and results files that cannot lie: non-finite detections dropped and counted, the
evaluator refusing them, results json standard and written atomically (issue 24, item 2)."""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from detkit.evaluation import (
    COCOEvaluator,
    CocoResults,
    detections_to_coco_results,
    merge_coco_results,
    write_coco_results,
)
from detkit.evaluation.per_image import per_image_ap

NAN, INF = float("nan"), float("inf")


def tiny_gt() -> dict:
    """Two 100x100 images: cat 7 ('a') has 2 GTs, cat 9 ('b') 1 GT."""
    return {
        "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
        "categories": [{"id": 7, "name": "a"}, {"id": 9, "name": "b"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 7, "bbox": [50, 50, 40, 40], "area": 1600, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 9, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 0},
        ],
    }


def nan_box_per_gt(gt: dict) -> list[dict]:
    return [dict(image_id=a["image_id"], category_id=a["category_id"], bbox=[NAN] * 4, score=0.9)
            for a in gt["annotations"]]


# ------------------------------------------------------------------------------------------------
# the evaluator refuses non-finite rows
# ------------------------------------------------------------------------------------------------


def test_all_nan_box_per_gt_is_refused_not_scored_one():
    # pycocotools itself gives AP = AR = 1.0 for these rows; the evaluator must not.
    with pytest.raises(ValueError, match=r"^3 result\(s\) have a non-finite bbox or score .*first: result 0, "
                                         r"image_id 1\)"):
        COCOEvaluator(tiny_gt(), backend="pycocotools").evaluate(nan_box_per_gt(tiny_gt()))


@pytest.mark.parametrize("field,value", [("bbox", [10, 10, INF, 40]), ("bbox", [10, -INF, 40, 40]),
                                         ("score", NAN), ("score", INF)])
def test_one_nonfinite_value_among_good_rows_is_refused(field, value):
    gt = tiny_gt()
    dets = [dict(image_id=a["image_id"], category_id=a["category_id"], bbox=a["bbox"], score=0.9)
            for a in gt["annotations"]]
    dets[2] = {**dets[2], field: value}
    with pytest.raises(ValueError, match=r"1 result\(s\).*first: result 2, image_id 2\)"):
        COCOEvaluator(gt, backend="pycocotools").evaluate(dets)


def test_per_image_ap_refuses_nonfinite_rows():
    with pytest.raises(ValueError, match=r"3 result\(s\) have a non-finite"):
        per_image_ap(tiny_gt(), nan_box_per_gt(tiny_gt()))


# ------------------------------------------------------------------------------------------------
# detections -> results: dropped and counted
# ------------------------------------------------------------------------------------------------


def det(boxes, scores, labels) -> dict:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32), "labels": torch.tensor(labels)}


def test_nonfinite_detections_are_dropped_counted_and_warned(caplog):
    dets = [
        det([[10, 10, 50, 50], [NAN, NAN, NAN, NAN], [0, 0, INF, 5]], [0.9, 0.8, 0.7], [0, 0, 1]),
        det([[0, 0, 20, 20], [1, 2, 3, 4]], [NAN, 0.5], [1, 0]),
    ]
    with caplog.at_level(logging.WARNING, logger="detkit"):
        res = detections_to_coco_results(dets, [1, 2], cat_ids=[7, 9])
    assert isinstance(res, CocoResults) and res.nonfinite_dropped == 3
    assert res == [{"image_id": 1, "category_id": 7, "bbox": [10.0, 10.0, 40.0, 40.0], "score": pytest.approx(0.9)},
                   {"image_id": 2, "category_id": 7, "bbox": [1.0, 2.0, 2.0, 2.0], "score": 0.5}]
    assert "3 detection(s) with a non-finite box coordinate or score" in caplog.text


def test_box_whose_width_overflows_is_dropped():
    big = float(np.finfo(np.float32).max)
    res = detections_to_coco_results([det([[-big, 0, big, 10]], [0.9], [0])], [1], warn=False)
    assert res == [] and res.nonfinite_dropped == 1  # x2 - x1 = inf in float32


def test_finite_detections_give_no_warning_and_zero_count(caplog):
    with caplog.at_level(logging.WARNING, logger="detkit"):
        res = detections_to_coco_results([det([[1, 2, 3, 4]], [0.5], [0])], [1])
    assert res.nonfinite_dropped == 0 and len(res) == 1 and caplog.text == ""


def test_counts_add_up_across_batches_and_ranks_and_survive_pickling(caplog):
    a = detections_to_coco_results([det([[NAN, 0, 1, 1], [0, 0, 1, 1]], [0.5, 0.5], [0, 0])], [1], warn=False)
    b = detections_to_coco_results([det([[0, 0, 1, 1]], [NAN], [0])], [2], warn=False)
    batches = CocoResults()
    batches += a
    batches += b
    assert len(batches) == 1 and batches.nonfinite_dropped == 2
    other_rank = pickle.loads(pickle.dumps(CocoResults([{"x": 1}], nonfinite_dropped=5)))
    assert other_rank.nonfinite_dropped == 5 and other_rank == [{"x": 1}]
    with caplog.at_level(logging.WARNING, logger="detkit"):
        merged = merge_coco_results([batches, other_rank, [{"y": 2}]])
    assert merged.nonfinite_dropped == 7 and len(merged) == 3
    assert caplog.text.count("non-finite") == 1 and "7 detection(s)" in caplog.text


def test_all_nan_model_through_the_dropping_path_scores_zero():
    gt = tiny_gt()
    dets = [det([[NAN] * 4], [0.9], [0]), det([[NAN] * 4, [NAN] * 4], [0.9, 0.8], [0, 1])]
    res = detections_to_coco_results(dets, [1, 2], cat_ids=[7, 9], warn=False)
    assert res.nonfinite_dropped == 3
    m = COCOEvaluator(gt, backend="pycocotools").evaluate(res)
    assert m["AP"] == 0.0 and m["AR100"] == 0.0


class _Images(Dataset):
    """Two 100x100 gray images with the ids of :func:`tiny_gt`."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> dict:
        from detkit.data.base import empty_sample

        return empty_sample(np.full((100, 100, 3), 128, np.uint8), i + 1)


class _GtPlusNan(nn.Module):
    """Predicts each image's GT boxes exactly, plus one NaN box with the top score."""

    def __init__(self, gt: dict) -> None:
        super().__init__()
        self.gt = gt

    def predict(self, batch: dict) -> list[dict]:
        out = []
        for image_id in batch["image_ids"].tolist():
            anns = [a for a in self.gt["annotations"] if a["image_id"] == image_id]
            boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)] + [[NAN] * 4]
            labels = [[7, 9].index(a["category_id"]) for a in anns] + [0]
            out.append(det(boxes, [0.5] * len(anns) + [0.99], labels))
        return out


def test_evaluate_dataset_flags_the_run_with_the_dropped_count(caplog):
    from detkit.engine.inference import evaluate_dataset

    gt = tiny_gt()
    dataset = _Images()
    dataset.cat_ids = [7, 9]
    with caplog.at_level(logging.WARNING, logger="detkit"):
        metrics, results = evaluate_dataset(_GtPlusNan(gt), dataset, COCOEvaluator(gt, backend="pycocotools"),
                                            torch.device("cpu"), batch_size=1, progress=False)
    assert metrics["nonfinite_dropped"] == 2.0
    assert metrics["AP"] == pytest.approx(1.0)  # the finite detections are the GT; the NaN ones are gone
    assert len(results) == 3 and all(math.isfinite(r["score"]) for r in results)
    assert caplog.text.count("non-finite") == 1 and "2 detection(s)" in caplog.text


def test_evaluate_dataset_without_nonfinite_has_no_flag():
    from detkit.engine.inference import evaluate_dataset

    class Exact(_GtPlusNan):
        def predict(self, batch: dict) -> list[dict]:
            return [{k: v[:-1] for k, v in d.items()} for d in super().predict(batch)]

    gt = tiny_gt()
    dataset = _Images()
    dataset.cat_ids = [7, 9]
    metrics, _ = evaluate_dataset(Exact(gt), dataset, COCOEvaluator(gt, backend="pycocotools"),
                                  torch.device("cpu"), batch_size=2, progress=False)
    assert "nonfinite_dropped" not in metrics and metrics["AP"] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------
# results json: standard, atomic, checked
# ------------------------------------------------------------------------------------------------

GOOD = [{"image_id": 1, "category_id": 7, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5}]


def test_results_json_refuses_nan_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "r.json"
    write_coco_results(GOOD, path)
    old = path.read_bytes()
    with pytest.raises(ValueError, match=r"1 result\(s\) have a non-finite bbox or score.*not written to .*r\.json"):
        write_coco_results([*GOOD, {**GOOD[0], "bbox": [NAN, 0, 1, 1]}], path)
    with pytest.raises(ValueError, match=r"not written to .*r\.json: Out of range float"):
        write_coco_results([{**GOOD[0], "extra": INF}], path)
    assert path.read_bytes() == old and json.loads(old) == GOOD
    assert sorted(os.listdir(tmp_path)) == ["r.json"]


def test_results_json_is_standard_json(tmp_path):
    path = tmp_path / "sub" / "r.json"
    res = detections_to_coco_results([det([[10, 10, 50, 50], [NAN, 0, 1, 1]], [0.9, 0.8], [0, 0])], [3], warn=False)
    write_coco_results(res, path)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard constant {c}")) == list(res)


def test_results_json_on_a_full_disk_is_one_line_and_the_old_file_is_intact(tmp_path, monkeypatch):
    from detkit.io import OutputWriteError

    path = tmp_path / "r.json"
    write_coco_results(GOOD, path)
    old = path.read_bytes()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputWriteError) as info:
        write_coco_results(GOOD * 1000, path)
    message = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in message
    assert message.startswith(f"cannot write {path}: disk full") and "previous file is unchanged" in message
    assert path.read_bytes() == old
    assert sorted(os.listdir(tmp_path)) == ["r.json"]  # no temporary left


# ------------------------------------------------------------------------------------------------
# through tools/test.py: a checkpoint with a NaN weight, a full disk
# ------------------------------------------------------------------------------------------------


def tiny_checkpoint(path, nan_bias: bool = False):
    from detkit.engine.checkpoint import atomic_save
    from tests.engine.standins import TinyDetector

    torch.manual_seed(0)
    model = TinyDetector(num_classes=2, width=8)
    if nan_bias:
        with torch.no_grad():
            model.head.out.bias[0] = NAN  # every predicted box has a NaN x1
    atomic_save({"model": model.state_dict()}, path)
    return path


def run_test_tool(tmp_path, ckpt, out) -> int:
    from tests.fixtures.tools import load_tool

    cfg = Path(__file__).resolve().parent / "engine" / "configs" / "tiny.py"
    return load_tool("test").main([str(cfg), str(ckpt), "--device", "cpu", "--out", str(out), "--no-progress"])


def test_test_tool_with_a_nan_checkpoint_writes_standard_json_and_flags_the_run(tmp_path, capsys):
    out = tmp_path / "results.json"
    assert run_test_tool(tmp_path, tiny_checkpoint(tmp_path / "nan.pth", nan_bias=True), out) == 0
    captured = capsys.readouterr()
    assert "warning: 8 detection(s) with a NaN/inf box or score were left out" in captured.err
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.000" in captured.out
    assert json.loads(out.read_text()) == []  # 8 images, one NaN box each: nothing to write


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd to tell the results file")
def test_test_tool_on_a_full_disk_is_one_line_and_keeps_the_old_results(tmp_path, capsys, monkeypatch):
    out = tmp_path / "results.json"
    out.write_text('[{"old": 1}]')
    ckpt = tiny_checkpoint(tmp_path / "ok.pth")
    real_fsync = os.fsync

    def full(fd: int) -> None:  # the disk fills up while the results temporary is written; other files behave
        if ".results.json." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    assert run_test_tool(tmp_path, ckpt, out) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write {out}: disk full") and err.count("\n") == 1
    assert out.read_text() == '[{"old": 1}]'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.pth", "results.json"]


def test_infer_tool_with_a_nan_checkpoint_writes_no_nan_and_warns(tmp_path, capsys):
    import cv2

    from tests.fixtures.tools import load_tool

    (tmp_path / "imgs").mkdir()
    for i in range(2):
        assert cv2.imwrite(str(tmp_path / "imgs" / f"{i}.png"), np.full((48, 80, 3), 100, np.uint8))
    cfg = str(Path(__file__).resolve().parent / "engine" / "configs" / "tiny.py")
    ckpt = tiny_checkpoint(tmp_path / "nan.pth", nan_bias=True)
    out = tmp_path / "out"
    assert load_tool("infer").main([cfg, str(ckpt), str(tmp_path / "imgs"), "--out", str(out), "--device", "cpu",
                                    "--score-thr", "0"]) == 0
    assert "warning: 2 detection(s) with a NaN/inf box or score left out" in capsys.readouterr().err
    records = json.loads((out / "detections.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert [r["detections"] for r in records] == [[], []]
