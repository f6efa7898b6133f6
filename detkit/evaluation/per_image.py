"""COCO AP of each image on its own (pycocotools), for paired comparisons over validation images.

``per_image_ap(gt, results)[image_id]`` is the COCO AP@[.5:.95] (all areas, 100 detections) that
pycocotools' COCOeval reports for that image alone: its ground truth and its detections, the
precision averaged over the IoU thresholds, recall points and the classes with ground truth in the
image, as ``COCOeval.summarize`` does. Images without (non-crowd) ground truth have no AP and are
left out. The mean of per-image APs is not the dataset AP (which pools detections of all images
per class before ranking them); it is the per-image quantity a bootstrap over images resamples
(:func:`detkit.evaluation.significance.bootstrap_interval`).

pycocotools' ``accumulate(p)`` cannot take a subset of the evaluated images (it indexes
``evalImgs`` by the position in the subset), so each image is evaluated on its own:
``params.imgIds = [image]`` then ``evaluate()`` and ``accumulate()``: about 5 ms an image.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from detkit.evaluation.results import first_nonfinite_result

__all__ = ["paired_image_differences", "per_image_ap"]


def per_image_ap(gt: Mapping[str, Any], results: Sequence[Mapping[str, Any]],
                 image_ids: Sequence[int] | None = None) -> dict[int, float]:
    """COCO AP of each image (see the module docstring).

    Args:
        gt: a COCO ground-truth dict (``images``, ``annotations``, ``categories``), e.g.
            ``COCOEvaluator(...).gt.dataset``.
        results: COCO result dicts (``image_id``, ``category_id``, ``bbox`` xywh, ``score``).
        image_ids: the images to score (default: every image in ``gt``).

    Returns:
        ``{image_id: AP in [0, 1]}`` for the images with ground truth (0.0 for such an image
        without detections).

    Raises:
        ValueError: a result with a NaN / inf ``bbox`` value or ``score``.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    count, first = first_nonfinite_result(results)
    if count:  # pycocotools can score a NaN box as a match
        raise ValueError(f"{count} result(s) have a non-finite bbox or score (NaN/inf; first: result {first}, "
                         f"image_id {results[first].get('image_id')}); drop them before scoring images")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(dict(gt))
        coco_gt.createIndex()
    ids = [int(i) for i in (image_ids if image_ids is not None else coco_gt.getImgIds())]
    with_gt = {int(a["image_id"]) for a in coco_gt.dataset["annotations"] if not a.get("iscrowd", 0)}
    dets = [dict(r) for r in results if int(r["image_id"]) in with_gt]
    out = {i: 0.0 for i in ids if i in with_gt}
    if not dets:
        return out
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        for image_id in out:
            ev.params.imgIds = [image_id]
            ev.evaluate()
            ev.accumulate()
            precision = ev.eval["precision"][:, :, :, 0, -1]  # (T, R, K) for area "all", 100 detections
            valid = precision[precision > -1]
            out[image_id] = float(valid.mean()) if valid.size else 0.0
    return out


def paired_image_differences(a: Mapping[int, float], b: Mapping[int, float]) -> np.ndarray:
    """``b[i] - a[i]`` over the images both score, in image id order (``(I,)`` float64).

    Raises:
        ValueError: when the two share no image.
    """
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("the two per-image AP tables share no image")
    return np.array([b[i] - a[i] for i in common], dtype=np.float64)
