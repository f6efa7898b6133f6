"""COCO box evaluation: pycocotools' COCOeval, or faster-coco-eval when installed (same numbers).

    evaluator = COCOEvaluator("data/coco/annotations/instances_val2017.json")
    metrics = evaluator.evaluate(results)      # results: COCO result dicts
    metrics["AP"], metrics["AP50"], metrics["AP/person"]
    print(evaluator.summary())                 # the standard 12-line COCO summary
    print(evaluator.per_class_table())

``results`` are COCO result dicts ``{"image_id": int, "category_id": int, "bbox": [x, y, w, h],
"score": float}`` in original-image pixels (:func:`detkit.evaluation.detections_to_coco_results`
makes them from a detector's output).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detkit.data.coco import crowd_flag, number_list
from detkit.errors import DataError
from detkit.evaluation.report import SUMMARY_KEYS, format_per_class_table, format_summary
from detkit.evaluation.results import first_nonfinite_result

logger = logging.getLogger(__name__)

__all__ = ["BACKENDS", "COCOEvaluator", "faster_coco_eval_available"]

BACKENDS = ("auto", "pycocotools", "faster")


def faster_coco_eval_available() -> bool:
    """True when the ``faster_coco_eval`` package can be imported."""
    return importlib.util.find_spec("faster_coco_eval") is not None


def _backend_classes(backend: str) -> tuple[type, type, str]:
    """(COCO class, COCOeval class, resolved backend name) for ``backend``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown COCO evaluation backend {backend!r}; accepted: {', '.join(BACKENDS)}")
    if backend == "faster" or (backend == "auto" and faster_coco_eval_available()):
        from detkit.extras import require

        fast = require("faster_coco_eval", "COCO evaluation backend 'faster' (else use 'pycocotools' or 'auto')")
        return fast.COCO, fast.COCOeval_faster, "faster"
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    return COCO, COCOeval, "pycocotools"


def _usable_ground_truth(dataset: dict, image_ids: Sequence[int] | None, source: str) -> dict:
    """``dataset`` restricted to ``image_ids`` with the annotations pycocotools can evaluate."""
    images = dataset["images"]
    if image_ids is not None:
        keep = {int(i) for i in image_ids}
        images = [im for im in images if im.get("id") in keep]
    known_images = {im.get("id") for im in images}
    known_cats = {c.get("id") for c in dataset["categories"]}
    anns, dropped = [], 0
    for a in dataset["annotations"]:
        if a.get("image_id") not in known_images:
            continue  # an image left out (or never listed): not ground truth of this evaluation
        box = number_list(a.get("bbox"), 4)  # the datasets' rule: 4 JSON numbers, no strings or booleans
        crowd = crowd_flag(a.get("iscrowd", 0))
        if a.get("category_id") not in known_cats or box is None or not all(map(math.isfinite, box)) or crowd is None:
            dropped += 1
            continue
        a = {**a, "area": a.get("area", box[2] * box[3]), "iscrowd": int(crowd)}
        anns.append(a)
    if dropped:
        logger.warning(f"{source}: {dropped} annotation(s) without a usable bbox or category, or with an "
                       "iscrowd other than 0 / 1, left out of evaluation")
    return {**dataset, "images": images, "annotations": anns}


class COCOEvaluator:
    """Box AP of COCO-style results against a COCO annotation file.

    Args:
        ann_file: path of a COCO instances json, or the loaded json dict.
        backend: ``"auto"`` (faster-coco-eval when installed, else pycocotools), ``"pycocotools"``
            or ``"faster"``. Both give the same numbers.
        class_names: optional names per category, in the order of the json's categories sorted by
            id; the json's own names are used otherwise.
        image_ids: evaluate only these images (e.g. those a dataset kept after skipping unreadable
            files); the ground truth of the other images is left out. Default: every image.

    Annotations pycocotools cannot evaluate (no ``bbox`` of 4 finite numbers, an ``iscrowd`` other
    than 0 / 1, or an image or category id that the json does not list) are left out with a
    warning, by the rules :class:`~detkit.data.CocoDataset` reads annotations with; a missing
    ``area`` becomes the box area and a missing ``iscrowd`` 0.

    After :meth:`evaluate`, ``self.stats`` holds the 12 COCO summary numbers and ``self.precision``
    the precision array ``(T=10 IoU thresholds, R=101 recall points, K classes, A=4 areas, M=3
    max-dets)`` (``-1`` where a class has no GT), for :meth:`summary`, :meth:`per_class_table`
    and :func:`detkit.viz.plot_pr_curves`.

    Raises:
        ValueError: ``ann_file`` missing, or without its ``images`` / ``annotations`` / ``categories``
            lists; an unknown ``backend``.

    Example:
        ```python
        evaluator = COCOEvaluator("data/coco/annotations/instances_val2017.json")
        metrics = evaluator.evaluate([{"image_id": 9, "category_id": 1, "bbox": [1, 2, 30, 40], "score": 0.9}])
        print(metrics["AP"])
        print(evaluator.summary())  # the 12-line COCO summary; per_class_table(): AP per class
        ```
    """

    def __init__(
        self,
        ann_file: str | os.PathLike | Mapping[str, Any],
        backend: str = "auto",
        class_names: Sequence[str] | None = None,
        image_ids: Sequence[int] | None = None,
    ) -> None:
        self._coco_cls, self._eval_cls, self.backend = _backend_classes(backend)
        if isinstance(ann_file, Mapping):
            dataset = copy.deepcopy(dict(ann_file))
        else:
            path = Path(ann_file)
            if not path.is_file():
                raise DataError(
                    f"COCO annotation file not found: {path}; expected a COCO instances json such as "
                    "data/coco/annotations/instances_val2017.json"
                )
            try:
                dataset = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise DataError(f"{path}: cannot read a COCO json: {e}") from e
            if not isinstance(dataset, Mapping):
                raise DataError(f"{path}: not a COCO json: top level is {type(dataset).__name__}")
        for key in ("images", "annotations", "categories"):
            if key not in dataset:
                raise DataError(f"COCO annotations lack the {key!r} list; keys present: {sorted(dataset)}")
        self.ann_file = None if isinstance(ann_file, Mapping) else str(ann_file)
        dataset = _usable_ground_truth(dataset, image_ids, self.ann_file or "the annotation dict")
        self.gt = self._make_coco(dataset)
        self.cat_ids: list[int] = sorted(c["id"] for c in dataset["categories"])
        self.image_ids: list[int] = sorted(im["id"] for im in dataset["images"])
        names = {c["id"]: str(c.get("name", c["id"])) for c in dataset["categories"]}
        if class_names is not None:
            if len(class_names) != len(self.cat_ids):
                raise DataError(
                    f"class_names has {len(class_names)} names but the annotations have "
                    f"{len(self.cat_ids)} categories; pass one name per category or None"
                )
            names = dict(zip(self.cat_ids, map(str, class_names)))
        self.class_names: list[str] = [names[c] for c in self.cat_ids]
        gt_cats = {a["category_id"] for a in dataset["annotations"]}
        self._has_gt = np.array([c in gt_cats for c in self.cat_ids])
        self.stats = np.zeros(len(SUMMARY_KEYS))
        self.precision: np.ndarray | None = None
        self.per_class_ap: dict[str, float] = {}

    def _make_coco(self, dataset: dict) -> Any:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = self._coco_cls()
            coco.dataset = dataset
            coco.createIndex()
        return coco

    def _check_results(self, results: Sequence[Mapping[str, Any]]) -> list[dict]:
        known = set(self.image_ids)
        out = []
        count, first = first_nonfinite_result(results)
        if count:
            raise ValueError(
                f"{count} result(s) have a non-finite bbox or score (NaN/inf; first: result {first}, image_id "
                f"{results[first].get('image_id')}); COCOEvaluator refuses them, as pycocotools can score NaN "
                "boxes as matches: drop them first (detections_to_coco_results does, counting them)"
            )
        for i, r in enumerate(results):
            missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in r]
            if missing:
                raise ValueError(
                    f"result {i} lacks {missing}; a COCO result is "
                    "{'image_id', 'category_id', 'bbox': [x, y, w, h], 'score'}"
                )
            if int(r["image_id"]) not in known:
                raise ValueError(f"result {i} has image_id {r['image_id']} which is not in the annotations")
            out.append(
                {"image_id": int(r["image_id"]), "category_id": int(r["category_id"]),
                 "bbox": [float(v) for v in r["bbox"]], "score": float(r["score"])}
            )
        return out

    def evaluate(self, results: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        """Run COCO box evaluation.

        Args:
            results: COCO result dicts (``image_id``, ``category_id``, ``bbox`` xywh, ``score``).

        Returns:
            ``AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl`` (0..1, ``-1`` where the
            annotations have no object of that size, as pycocotools reports) and ``AP/<class name>``
            for every class that has ground truth. Empty results give zeros.

        Raises:
            ValueError: a result lacks a key, names an image not in the annotations, or has a NaN /
                inf ``bbox`` value or ``score`` (the message gives the count and the first image id).
        """
        dets = self._check_results(results)
        if not dets:
            # pycocotools cannot load an empty result list; nothing detected means zero AP/AR.
            self.stats = np.zeros(len(SUMMARY_KEYS))
            self.precision = None
            self.per_class_ap = {n: 0.0 for n, g in zip(self.class_names, self._has_gt) if g}
            return self._metrics()
        with contextlib.redirect_stdout(io.StringIO()):
            dt = self.gt.loadRes(dets)
            kwargs = {"print_function": lambda *a, **k: None} if self.backend == "faster" else {}
            ev = self._eval_cls(self.gt, dt, "bbox", **kwargs)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        self.stats = np.asarray(ev.stats[: len(SUMMARY_KEYS)], dtype=np.float64)
        self.precision = np.asarray(ev.eval["precision"], dtype=np.float64)
        self.per_class_ap = self._per_class(self.precision, ev.params.catIds)
        return self._metrics()

    def _per_class(self, precision: np.ndarray, cat_ids: Sequence[int]) -> dict[str, float]:
        """AP (IoU .50:.95, all areas, 100 dets) per class that has GT."""
        out: dict[str, float] = {}
        for k, cat in enumerate(cat_ids):
            idx = self.cat_ids.index(cat)
            if not self._has_gt[idx]:
                continue
            p = precision[:, :, k, 0, -1]  # (T, R) for area "all", maxDets 100
            p = p[p > -1]
            out[self.class_names[idx]] = float(p.mean()) if p.size else 0.0
        return out

    def _metrics(self) -> dict[str, float]:
        metrics = {k: float(v) for k, v in zip(SUMMARY_KEYS, self.stats)}
        metrics.update({f"AP/{name}": ap for name, ap in self.per_class_ap.items()})
        return metrics

    def summary(self) -> str:
        """The standard 12-line COCO summary of the last :meth:`evaluate`."""
        return format_summary(self.stats)

    def per_class_table(self) -> str:
        """A table of per-class AP of the last :meth:`evaluate` (classes without GT shown as ``-``)."""
        aps = [self.per_class_ap.get(n) for n in self.class_names]
        return format_per_class_table(self.class_names, aps)
