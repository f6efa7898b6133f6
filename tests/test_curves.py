"""Precision / recall / F1 against the score and PR curves from errors.py's matching, on hand-made
cases with known values, and COCOeval's AP50 reproduced."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from detkit.evaluation import COCOEvaluator
from detkit.evaluation.curves import NUM_RECALLS, class_curves
from detkit.evaluation.errors import analyse_errors
from detkit.viz import plot_class_curves


def _gt(boxes_by_class: dict[int, list[list[float]]], num_classes: int = 2, image_id: int = 1) -> dict:
    anns = [{"id": i + 1, "image_id": image_id, "category_id": c + 1, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for i, (c, b) in enumerate((c, b) for c, bs in boxes_by_class.items() for b in bs)]
    return {"images": [{"id": image_id, "width": 200, "height": 200}], "annotations": anns,
            "categories": [{"id": c + 1, "name": f"c{c}"} for c in range(num_classes)]}


def _det(cat: int, box: list[float], score: float, image_id: int = 1) -> dict:
    return {"image_id": image_id, "category_id": cat + 1, "bbox": box, "score": score}


A, B = [10.0, 10.0, 40.0, 40.0], [100.0, 100.0, 50.0, 50.0]
FAR = [150.0, 10.0, 30.0, 30.0]


def test_a_hand_made_class_has_its_known_precision_recall_and_f1():
    gt = _gt({0: [A, B]})
    # 0.9 finds A, 0.8 is background, 0.7 finds B: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    results = [_det(0, A, 0.9), _det(0, FAR, 0.8), _det(0, B, 0.7)]
    report = analyse_errors(gt, results, score_thr=0.0)
    assert report.det_scores.tolist() == [0.9, 0.8, 0.7] and report.det_correct.tolist() == [True, False, True]
    c = class_curves(report)
    at = {t: int(round(t * 1000)) for t in (0.5, 0.75, 0.85, 0.95)}
    assert c.precision[0, at[0.95]] == 1.0 and c.recall[0, at[0.95]] == 0.0  # nothing scores >= 0.95
    assert c.precision[0, at[0.85]] == 1.0 and c.recall[0, at[0.85]] == 0.5
    assert c.precision[0, at[0.75]] == 0.5 and c.recall[0, at[0.75]] == 0.5
    assert c.precision[0, at[0.5]] == pytest.approx(2 / 3) and c.recall[0, at[0.5]] == 1.0
    assert c.f1[0, at[0.5]] == pytest.approx(0.8) and c.f1[0, at[0.85]] == pytest.approx(2 / 3)
    # COCO's interpolation: precision 1 up to recall 0.5, then the envelope 2/3 up to recall 1
    expected = np.where(np.linspace(0, 1, NUM_RECALLS) <= 0.5, 1.0, 2 / 3)
    np.testing.assert_allclose(c.pr[0], expected)
    assert c.ap[0] == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert np.isnan(c.ap[1]) and c.has_gt.tolist() == [True, False]  # class 1 has no GT: out of the means
    np.testing.assert_allclose(c.mean("pr"), c.pr[0])
    assert c.best_f1() == (pytest.approx(0.0), pytest.approx(0.8))  # F1 0.8 from threshold 0 up to 0.7
    # the same AP50 as COCOeval's
    ev = COCOEvaluator(gt)
    assert ev.evaluate(results)["AP50"] == pytest.approx(c.ap[0])


def test_curves_reproduce_cocoeval_ap50_per_class_on_a_random_case():
    rng = np.random.default_rng(3)
    images, anns, results = [], [], []
    for image_id in range(1, 9):
        images.append({"id": image_id, "width": 400, "height": 400})
        for _ in range(int(rng.integers(1, 6))):
            x, y, w, h = (float(v) for v in (*rng.uniform(0, 300, 2), *rng.uniform(10, 90, 2)))
            cat = int(rng.integers(0, 3))
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat + 1, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
            if rng.random() < 0.8:  # a near box, sometimes of another class
                j = rng.normal(0, 0.15, 4) * [w, h, w, h]
                results.append(_det(cat if rng.random() < 0.8 else int(rng.integers(0, 3)),
                                    [x + j[0], y + j[1], w + j[2], h + j[3]], 0.0, image_id))
        for _ in range(3):  # background detections
            results.append(_det(int(rng.integers(0, 3)), [*rng.uniform(0, 300, 2).tolist(), 40.0, 40.0], 0.0, image_id))
    for r, s in zip(results, rng.permutation(len(results))):
        r["score"] = float(0.01 + 0.98 * s / len(results))  # distinct scores: no ties to order
    gt = {"images": images, "annotations": anns, "categories": [{"id": c + 1, "name": f"c{c}"} for c in range(3)]}
    curves = class_curves(analyse_errors(gt, results, score_thr=0.0))
    ev = COCOEvaluator(gt)
    ev.evaluate(results)
    coco = ev.precision[0, :, :, 0, 2]  # (R, K) IoU 0.5, area all, 100 detections
    np.testing.assert_allclose(curves.pr.T, coco, atol=1e-12)
    np.testing.assert_allclose(curves.ap, coco.mean(axis=0), atol=1e-12)


def test_no_detections_give_zero_recall_and_f1(tmp_path):
    c = class_curves(analyse_errors(_gt({0: [A], 1: [B]}), [], score_thr=0.0))
    assert (c.recall == 0).all() and (c.f1 == 0).all() and (c.precision == 1).all() and (c.ap == 0).all()


def test_the_curve_figures_are_written_at_a_bounded_size(tmp_path):
    names = [f"class {i}" for i in range(25)]  # more classes than the legend takes
    gt = {"images": [{"id": 1, "width": 500, "height": 500}],
          "annotations": [{"id": i + 1, "image_id": 1, "category_id": i + 1, "bbox": [i * 19.0, 5.0, 15.0, 15.0],
                           "area": 225.0, "iscrowd": 0} for i in range(25)],
          "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}
    results = [_det(i, [i * 19.0, 5.0, 15.0, 15.0], 0.5 + i / 100) for i in range(25)]
    paths = plot_class_curves(class_curves(analyse_errors(gt, results, score_thr=0.0)), tmp_path)
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["PR_curve.png", "P_curve.png", "R_curve.png", "F1_curve.png"]
    for p in paths:
        h, w = cv2.imread(p).shape[:2]
        assert 400 <= h <= 1000 and 600 <= w <= 1200
