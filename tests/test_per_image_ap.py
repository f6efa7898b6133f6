"""detkit.evaluation.per_image: each image's COCO AP equals COCOEvaluator on that image alone."""

import numpy as np
import pytest

from detkit.evaluation import COCOEvaluator
from detkit.evaluation.per_image import paired_image_differences, per_image_ap

CATS = [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}]


def make_set(seed):
    rng = np.random.default_rng(seed)
    anns, dets = [], []
    for image_id in range(1, 9):
        for _ in range(int(rng.integers(0 if image_id == 8 else 1, 5))):
            xy, wh = rng.uniform(0, 300, 2), rng.uniform(8, 150, 2)
            cat = int(rng.choice([1, 3]))
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "bbox": [*xy, *wh],
                         "area": float(wh.prod()), "iscrowd": 0})
            for _ in range(int(rng.integers(0, 3))):
                dets.append({"image_id": image_id, "category_id": cat, "score": float(rng.uniform()),
                             "bbox": [*(xy + rng.normal(0, 8, 2)), *(wh * rng.uniform(0.8, 1.2, 2))]})
        if image_id == 8:  # no ground truth: detections only
            dets.append({"image_id": 8, "category_id": 1, "score": 0.9, "bbox": [0, 0, 10, 10]})
    gt = {"images": [{"id": i, "width": 400, "height": 400} for i in range(1, 9)], "annotations": anns,
          "categories": CATS}
    return gt, dets


def test_equals_cocoevaluator_on_each_image_alone():
    gt, dets = make_set(0)
    aps = per_image_ap(gt, dets)
    with_gt = sorted({a["image_id"] for a in gt["annotations"]})
    assert sorted(aps) == with_gt and 8 not in aps
    for image_id in with_gt:
        mine = [d for d in dets if d["image_id"] == image_id]
        ref = COCOEvaluator(gt, backend="pycocotools", image_ids=[image_id]).evaluate(mine)["AP"]
        assert aps[image_id] == pytest.approx(max(ref, 0.0), abs=1e-12)
    assert len(set(aps.values())) > 2  # the images differ: not a constant


def test_no_detections_give_zero_and_differences_pair_by_image():
    gt, dets = make_set(1)
    none = per_image_ap(gt, [])
    assert set(none.values()) == {0.0}
    aps = per_image_ap(gt, dets)
    diff = paired_image_differences(none, aps)
    assert diff.tolist() == [aps[i] for i in sorted(aps)]
    with pytest.raises(ValueError, match="share no image"):
        paired_image_differences({1: 0.5}, {2: 0.5})
