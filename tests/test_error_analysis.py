"""detkit.evaluation.errors: hand-made images with known outcomes, and parity with COCOeval's matches."""

import contextlib
import io

import numpy as np
import pytest

from detkit.evaluation.errors import DET_ERRORS, GT_OUTCOMES, analyse_errors

CATS = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]


def gt_dict(anns, images=(1,)):
    out = []
    for i, (image_id, cat, box, *crowd) in enumerate(anns):
        out.append({"id": i + 1, "image_id": image_id, "category_id": cat, "bbox": list(box),
                    "area": box[2] * box[3], "iscrowd": int(bool(crowd and crowd[0]))})
    return {"images": [{"id": i, "width": 640, "height": 640} for i in images], "annotations": out,
            "categories": CATS}


def det(image_id, cat, box, score):
    return {"image_id": image_id, "category_id": cat, "bbox": list(box), "score": score}


def test_every_outcome_once():
    gt = gt_dict([
        (1, 1, (0, 0, 10, 10)),  # A cat, small: found by d1 (d2 is its duplicate)
        (1, 2, (50, 50, 40, 40)),  # B dog, medium: d3 says cat
        (1, 1, (200, 0, 100, 100)),  # C cat, large: d4 covers 40% of it
        (1, 2, (0, 200, 20, 20)),  # D dog, small: its only detection scores below the threshold
        (1, 1, (300, 300, 50, 50), True),  # E crowd
    ])
    dets = [det(1, 1, (0, 0, 10, 10), 0.9), det(1, 1, (0, 0, 10, 10), 0.8), det(1, 1, (50, 50, 40, 40), 0.7),
            det(1, 1, (200, 0, 100, 40), 0.6), det(1, 2, (500, 500, 10, 10), 0.5),
            det(1, 1, (305, 305, 20, 20), 0.45),  # inside the crowd box: ignored
            det(1, 2, (0, 200, 20, 20), 0.1)]
    r = analyse_errors(gt, dets, score_thr=0.3)
    # rows small / medium / large; columns detected, mislocalised, wrong class, missed
    assert GT_OUTCOMES == ("detected", "mislocalised", "wrong_class", "missed")
    assert r.gt_outcomes.tolist() == [[1, 0, 0, 1], [0, 0, 1, 0], [0, 1, 0, 0]]
    # columns duplicate, wrong class, mislocalised, background; d4 is 100 x 40 = 4000 px² (medium)
    assert DET_ERRORS == ("duplicate", "wrong_class", "mislocalised", "background")
    assert r.det_errors.tolist() == [[1, 0, 0, 1], [0, 1, 1, 0], [0, 0, 0, 0]]
    assert r.num_dets.tolist() == [4, 2, 0]
    # rows/columns cat, dog, background
    assert r.confusion.tolist() == [[1, 0, 1], [1, 0, 1], [2, 1, 0]]
    assert r.missed_pct() == {"small": 50.0, "medium": 0.0, "large": 0.0}
    assert r.not_found_pct() == {"small": 50.0, "medium": 100.0, "large": 100.0}
    md = r.to_markdown()
    assert "| small | 2 | 1 (50.0%) | 0 (0.0%) | 0 (0.0%) | 1 (50.0%) |" in md
    assert "| dog | 1 | 0 | 1 |" in md


def test_higher_score_takes_the_best_iou_and_the_other_falls_back():
    gt = gt_dict([(1, 1, (0, 0, 100, 100)), (1, 1, (10, 0, 100, 100))])
    # both detections overlap both GTs at IoU >= 0.5; the first (0.9) takes GT 1 (IoU 1), the second GT 0
    dets = [det(1, 1, (10, 0, 100, 100), 0.9), det(1, 1, (5, 0, 100, 100), 0.8)]
    r = analyse_errors(gt, dets)
    assert r.gt_outcomes[2].tolist() == [2, 0, 0, 0] and r.det_errors.sum() == 0
    assert r.confusion.tolist() == [[2, 0, 0], [0, 0, 0], [0, 0, 0]]


def test_images_without_gt_or_without_detections():
    gt = gt_dict([(2, 2, (0, 0, 50, 50))], images=(1, 2))
    r = analyse_errors(gt, [det(1, 1, (0, 0, 50, 50), 0.9)])
    assert r.gt_outcomes[1].tolist() == [0, 0, 0, 1]  # image 2's dog: missed
    assert r.det_errors[1].tolist() == [0, 0, 0, 1]  # image 1's cat: background
    assert r.confusion.tolist() == [[0, 0, 0], [0, 0, 1], [1, 0, 0]]
    empty = analyse_errors(gt_dict([], images=(1,)), [])
    assert empty.gt_outcomes.sum() == 0 and empty.confusion.sum() == 0 and "| all | 0 |" in empty.to_markdown()


def test_bad_arguments():
    gt = gt_dict([(1, 1, (0, 0, 5, 5))])
    with pytest.raises(ValueError, match="bg_iou"):
        analyse_errors(gt, [], fg_iou=0.5, bg_iou=0.5)
    with pytest.raises(ValueError, match="category_id 7"):
        analyse_errors(gt, [det(1, 7, (0, 0, 5, 5), 0.9)])
    with pytest.raises(ValueError, match="class names"):
        analyse_errors(gt, [], class_names=["cat"])


def test_plots_are_written(tmp_path):
    r = analyse_errors(gt_dict([(1, 1, (0, 0, 50, 50))]), [det(1, 2, (0, 0, 50, 50), 0.9)])
    paths = r.plot(tmp_path)
    assert [p.name for p in paths] == ["confusion_matrix.png", "errors_by_size.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_correct_detections_are_cocoeval_true_positives_at_iou_05():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    anns, dets = [], []
    for image_id in range(1, 21):
        centres = rng.uniform(20, 200, size=(int(rng.integers(0, 7)), 2))
        for c in centres:
            wh = rng.uniform(5, 120, size=2)
            anns.append((image_id, int(rng.integers(1, 3)), (*(c - wh / 2), *wh)))
            for _ in range(int(rng.integers(0, 3))):  # jittered detections, some of the wrong class
                jit = (c - wh / 2 + rng.normal(0, wh / 6), wh * rng.uniform(0.7, 1.3, 2))
                dets.append(det(image_id, int(rng.integers(1, 3)), (*jit[0], *jit[1]), float(rng.uniform(0.05, 1))))
        for _ in range(int(rng.integers(0, 3))):
            dets.append(det(image_id, int(rng.integers(1, 3)), (*rng.uniform(0, 200, 2), *rng.uniform(5, 60, 2)),
                            float(rng.uniform(0.05, 1))))
    gt = gt_dict(anns, images=range(1, 21))
    r = analyse_errors(gt, dets, score_thr=0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dets), "bbox")
        ev.evaluate()
    tps = sum(int((e["dtMatches"][0] > 0).sum()) for e in ev.evalImgs if e and e["aRng"] == [0, 1e10])
    assert tps > 20 and r.gt_outcomes[:, 0].sum() == tps
    assert r.confusion[:2].sum() == len(anns) and r.confusion[:, :2].sum() == len(dets)
