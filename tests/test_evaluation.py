"""COCOEvaluator against pycocotools' COCOeval, result conversion, reports and PR plots."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from detkit.evaluation import (
    COCOEvaluator,
    detections_to_coco_results,
    format_summary,
    write_coco_results,
)
from detkit.viz import plot_pr_curves

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
COCO128_ANN = SHARED / "data" / "coco128" / "annotations" / "instances_train2017.json"


def tiny_gt() -> dict:
    """Two images, two classes: cat 7 ('a') has 2 GTs, cat 9 ('b') 1 GT, cat 11 ('c') none."""
    return {
        "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
        "categories": [{"id": 7, "name": "a"}, {"id": 9, "name": "b"}, {"id": 11, "name": "c"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 7, "bbox": [50, 50, 40, 40], "area": 1600, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 9, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 0},
        ],
    }


def pycocotools_stats(gt: dict, dets: list[dict]) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = json.loads(json.dumps(gt))
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes([dict(d) for d in dets]), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


def test_ground_truth_as_detections_gives_ap_one():
    gt = tiny_gt()
    dets = [dict(image_id=a["image_id"], category_id=a["category_id"], bbox=a["bbox"], score=0.9)
            for a in gt["annotations"]]
    m = COCOEvaluator(gt, backend="pycocotools").evaluate(dets)
    assert m["AP"] == pytest.approx(1.0)
    assert m["AP50"] == pytest.approx(1.0)
    assert m["AP/a"] == pytest.approx(1.0) and m["AP/b"] == pytest.approx(1.0)
    assert "AP/c" not in m  # no GT for class c: no per-class AP
    assert m["APl"] == -1.0  # no large objects: pycocotools reports -1


def test_hand_computed_half_ap():
    # One of the two 'a' GTs found, nothing for 'b': AP(a) = 0.5 at every IoU, AP(b) = 0.
    gt = tiny_gt()
    dets = [dict(image_id=1, category_id=7, bbox=[10, 10, 40, 40], score=0.9)]
    ev = COCOEvaluator(gt, backend="pycocotools")
    m = ev.evaluate(dets)
    assert m["AP/a"] == pytest.approx(51 / 101)  # precision 1 on recall points 0..0.5 (51 of 101)
    assert m["AP/b"] == 0.0
    assert m["AP"] == pytest.approx((51 / 101 + 0) / 2)
    assert m["AP"] == pytest.approx(pycocotools_stats(gt, dets)[0])


def test_empty_results_are_zero():
    ev = COCOEvaluator(tiny_gt())
    m = ev.evaluate([])
    assert m["AP"] == 0.0 and m["AR100"] == 0.0 and m["AP/a"] == 0.0
    assert "= 0.000" in ev.summary()


def test_bad_inputs_raise_value_error(tmp_path):
    ev = COCOEvaluator(tiny_gt())
    with pytest.raises(ValueError, match="not in the annotations"):
        ev.evaluate([dict(image_id=99, category_id=7, bbox=[0, 0, 1, 1], score=1.0)])
    with pytest.raises(ValueError, match="lacks"):
        ev.evaluate([dict(image_id=1, bbox=[0, 0, 1, 1], score=1.0)])
    with pytest.raises(ValueError, match="not found"):
        COCOEvaluator(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="accepted"):
        COCOEvaluator(tiny_gt(), backend="fast")


def perturbed(gt: dict, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    cats = [c["id"] for c in gt["categories"]]
    dets = []
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        for k in range(2):
            j = rng.normal(0, 0.08 * (k + 1), 4)
            dets.append(dict(image_id=a["image_id"], category_id=a["category_id"] if rng.random() > 0.1
                             else int(rng.choice(cats)), bbox=[x + j[0] * w, y + j[1] * h, w * (1 + j[2]),
                                                               h * (1 + j[3])], score=float(rng.random())))
    return dets


@pytest.mark.skipif(not COCO128_ANN.exists(), reason="coco128 not found under ../shared/data")
def test_equals_pycocotools_on_coco128():
    gt = json.loads(COCO128_ANN.read_text())
    dets = perturbed(gt, seed=0)
    ev = COCOEvaluator(COCO128_ANN, backend="auto")
    m = ev.evaluate(dets)
    ref = pycocotools_stats(gt, dets)
    ours = np.array([m[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl",
                                    "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")])
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
    assert 0.05 < m["AP"] < 0.95  # the perturbation made a non-trivial case
    per_class = [v for k, v in m.items() if k.startswith("AP/")]
    assert len(per_class) == len({a["category_id"] for a in gt["annotations"]})
    assert "person" in ev.per_class_table()


def test_faster_backend_matches_pycocotools_when_installed():
    pytest.importorskip("faster_coco_eval")
    gt = tiny_gt()
    dets = perturbed(gt, seed=1)
    a = COCOEvaluator(gt, backend="pycocotools").evaluate(dets)
    b = COCOEvaluator(gt, backend="faster").evaluate(dets)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], abs=1e-9)


def test_detections_to_coco_results_converts_boxes_and_categories():
    dets = [
        {"boxes": torch.tensor([[10.0, 20.0, 50.0, 80.0]]), "scores": torch.tensor([0.75]),
         "labels": torch.tensor([1])},
        {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    res = detections_to_coco_results(dets, torch.tensor([5, 6]), cat_ids=[7, 9])
    assert res == [{"image_id": 5, "category_id": 9, "bbox": [10.0, 20.0, 40.0, 60.0], "score": 0.75}]
    with pytest.raises(ValueError, match="image ids"):
        detections_to_coco_results(dets, [5], cat_ids=[7, 9])
    with pytest.raises(ValueError, match="category id"):
        detections_to_coco_results(dets, [5, 6], cat_ids=[7])


def test_summary_format_and_results_json_and_pr_plot(tmp_path):
    gt = tiny_gt()
    ev = COCOEvaluator(gt)
    dets = perturbed(gt, seed=2)
    ev.evaluate(dets)
    text = format_summary(ev.stats)
    lines = text.splitlines()
    assert len(lines) == 12
    assert lines[0].startswith(" Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = ")
    assert lines[6].startswith(" Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=  1 ]")
    write_coco_results(dets, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == dets
    plot_pr_curves(ev.precision, tmp_path / "pr.png", class_names=ev.class_names)
    assert (tmp_path / "pr.png").stat().st_size > 1000


def _two_image_gt() -> dict:
    return {
        "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 3, "bbox": [20, 20, 30, 30], "area": 900, "iscrowd": 0},
        ],
        "categories": [{"id": 3, "name": "box"}],
    }


def test_image_ids_leave_the_other_images_ground_truth_out():
    dets = [{"image_id": 1, "category_id": 3, "bbox": [10, 10, 40, 40], "score": 0.9}]
    everything = COCOEvaluator(_two_image_gt(), backend="pycocotools").evaluate(dets)
    kept = COCOEvaluator(_two_image_gt(), backend="pycocotools", image_ids=[1]).evaluate(dets)
    assert everything["AR100"] == pytest.approx(0.5)  # image 2's object was missed
    assert kept["AP"] == pytest.approx(1.0) and kept["AR100"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="image_id 2"):
        COCOEvaluator(_two_image_gt(), backend="pycocotools", image_ids=[1]).evaluate(
            dets + [{"image_id": 2, "category_id": 3, "bbox": [0, 0, 5, 5], "score": 0.1}])


def test_annotations_pycocotools_cannot_use_are_left_out(caplog):
    gt = _two_image_gt()
    del gt["annotations"][1]["area"], gt["annotations"][1]["iscrowd"]  # filled in: 30 * 30, not crowd
    gt["annotations"] += [
        {"id": 3, "image_id": 1, "category_id": 3},  # no bbox
        {"id": 4, "image_id": 1, "category_id": 3, "bbox": [1, 2, float("nan"), 4]},
        {"id": 5, "image_id": 1, "category_id": 99, "bbox": [1, 2, 3, 4]},  # unknown category
        {"id": 6, "image_id": 1, "category_id": 3, "bbox": ["1", "2", "3", "4"]},  # strings, as CocoDataset refuses
        {"id": 7, "image_id": 1, "category_id": 3, "bbox": [1, 2, 3, 4], "iscrowd": 2},  # neither 0 nor 1
    ]
    dets = [{"image_id": 1, "category_id": 3, "bbox": [10, 10, 40, 40], "score": 0.9},
            {"image_id": 2, "category_id": 3, "bbox": [20, 20, 30, 30], "score": 0.8}]
    with caplog.at_level("WARNING"):
        metrics = COCOEvaluator(gt, backend="pycocotools").evaluate(dets)
    assert metrics["AP"] == pytest.approx(1.0)  # the five unusable rows are not missed objects
    assert "5 annotation(s) without a usable bbox or category" in caplog.text


def test_build_evaluator_evaluates_only_the_images_a_dataset_kept(tmp_path):
    from types import SimpleNamespace

    from detkit.engine.inference import build_evaluator

    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(_two_image_gt()))
    clean = SimpleNamespace(ann_file=str(ann), records=[{"image_id": 1}, {"image_id": 2}], problems={},
                            class_names=["box"])
    skipped = SimpleNamespace(ann_file=str(ann), records=[{"image_id": 1}], problems={"unreadable image": 1},
                              class_names=["box"])
    assert build_evaluator(clean, backend="pycocotools").image_ids == [1, 2]
    assert build_evaluator(skipped, backend="pycocotools").image_ids == [1]
