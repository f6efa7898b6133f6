"""Detector output -> COCO result dicts, and writing them as a COCO results json.

A detection with a non-finite box coordinate or score (NaN or inf, e.g. from a checkpoint with a
NaN weight) is never turned into a result: :func:`detections_to_coco_results` drops it, counts it
in ``CocoResults.nonfinite_dropped`` and warns with the count (logger ``detkit``), so what is
evaluated and written is what the model really found, and the run can be flagged.
:class:`~detkit.evaluation.COCOEvaluator` refuses such rows outright, and
:func:`write_coco_results` writes standard JSON (no bare ``NaN``) atomically.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from detkit.io import OutputWriteError, atomic_write_text

__all__ = [
    "CocoResults",
    "detections_to_coco_results",
    "first_nonfinite_result",
    "merge_coco_results",
    "write_coco_results",
]

logger = logging.getLogger("detkit")


class CocoResults(list):
    """A list of COCO result dicts that also carries ``nonfinite_dropped``: how many detections
    were left out because a box coordinate or the score was NaN / inf.

    ``a += b`` adds ``b``'s count to ``a``'s (for collecting batch after batch); the count survives
    pickling (``all_gather_object``).

    Args:
        results: the result dicts (``image_id``, ``category_id``, ``bbox`` xywh, ``score``).
        nonfinite_dropped: the count of detections left out.
    """

    def __init__(self, results: Iterable[dict[str, Any]] = (), nonfinite_dropped: int = 0) -> None:
        super().__init__(results)
        self.nonfinite_dropped = int(nonfinite_dropped)

    def __iadd__(self, other: Iterable[dict[str, Any]]) -> CocoResults:  # type: ignore[override,misc]
        self.extend(other)
        self.nonfinite_dropped += int(getattr(other, "nonfinite_dropped", 0))
        return self


def _warn_dropped(n: int) -> None:
    if n:
        logger.warning(f"{n} detection(s) with a non-finite box coordinate or score (NaN/inf) dropped from the "
                       "results: the model's outputs are broken (check the checkpoint for NaN weights)")


def detections_to_coco_results(
    detections: Sequence[Mapping[str, Tensor]],
    image_ids: Sequence[int] | Tensor,
    cat_ids: Sequence[int] | None = None,
    warn: bool = True,
) -> CocoResults:
    """Turn a batch of detections into COCO result dicts, dropping non-finite ones.

    Args:
        detections: one dict per image with ``boxes (K, 4)`` xyxy in original-image pixels,
            ``scores (K,)`` and ``labels (K,)`` (contiguous class indices 0..C-1), as
            ``Detector.predict`` returns.
        image_ids: ``(B,)`` COCO image ids of the batch (``batch["image_ids"]``).
        cat_ids: COCO category id of each class index (``dataset.cat_ids``); ``None`` keeps the
            class index as the category id.
        warn: log a warning naming the count when detections were dropped (a caller collecting
            many batches passes False and warns once, see :func:`merge_coco_results`).

    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]``, ordered image by image,
        as a :class:`CocoResults` whose ``nonfinite_dropped`` counts the detections left out for
        a NaN / inf box coordinate or score.
    """
    ids = image_ids.tolist() if isinstance(image_ids, Tensor) else list(image_ids)
    if len(ids) != len(detections):
        raise ValueError(f"{len(detections)} detection dicts but {len(ids)} image ids; pass one id per image")
    out = CocoResults()
    for image_id, det in zip(ids, detections):
        boxes = det["boxes"].detach().float().cpu().reshape(-1, 4)
        if boxes.numel() == 0:
            continue
        scores = det["scores"].detach().float().cpu().reshape(-1)
        labels_t = det["labels"].detach().cpu().long().reshape(-1)
        finite = torch.isfinite(boxes).all(1) & torch.isfinite(scores)  # (K,)
        out.nonfinite_dropped += int((~finite).sum())
        boxes, scores, labels_t = boxes[finite], scores[finite], labels_t[finite]
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)  # (K, 4) xyxy -> xywh
        labels = labels_t.tolist()
        if cat_ids is not None and labels and max(labels) >= len(cat_ids):
            raise ValueError(f"label {max(labels)} has no category id: cat_ids has {len(cat_ids)} entries")
        for box, score, label in zip(xywh.tolist(), scores.tolist(), labels):
            if not all(map(math.isfinite, box)):  # a finite xyxy can overflow to inf in w = x2 - x1
                out.nonfinite_dropped += 1
                continue
            out.append({
                "image_id": int(image_id),
                "category_id": int(cat_ids[label]) if cat_ids is not None else int(label),
                "bbox": box,
                "score": float(score),
            })
    if warn:
        _warn_dropped(out.nonfinite_dropped)
    return out


def merge_coco_results(parts: Iterable[Iterable[dict[str, Any]]], warn: bool = True) -> CocoResults:
    """Concatenate result lists (batches, or the parts gathered from every rank), adding up their
    ``nonfinite_dropped`` counts; with ``warn``, one warning names the total when it is not 0.

    Args:
        parts: result lists (:class:`CocoResults` or plain lists of dicts).
        warn: log the warning.

    Returns:
        One :class:`CocoResults`."""
    out = CocoResults()
    for part in parts:
        out += part
    if warn:
        _warn_dropped(out.nonfinite_dropped)
    return out


def first_nonfinite_result(results: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """``(count, index of the first)`` of the results whose ``bbox`` or ``score`` is not finite
    (``(0, -1)`` when all are finite); values that are not numbers are left to the caller."""
    count, first = 0, -1
    for i, r in enumerate(results):
        try:
            values = [float(v) for v in r["bbox"]] + [float(r["score"])]
        except (KeyError, TypeError, ValueError):
            continue
        if not all(map(math.isfinite, values)):
            count += 1
            first = i if first < 0 else first
    return count, first


def write_coco_results(results: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """Write COCO result dicts as a json list (the format COCO's evaluation server takes).

    The file is standard JSON (a NaN / inf value is refused, not written as a bare ``NaN``) and
    is written atomically: on a full disk or another refused write, the previous file at ``path``
    is intact and no temporary is left.

    Args:
        results: dicts with ``image_id``, ``category_id``, ``bbox`` (xywh, original pixels), ``score``.
        path: the ``.json`` file.

    Raises:
        ValueError: a non-finite value in ``results`` (nothing written), or
            :class:`detkit.io.OutputWriteError` (a ``ValueError``, one line naming ``path``)
            when the file system refuses the write.
    """
    count, first = first_nonfinite_result(results)
    if count:
        raise ValueError(f"{count} result(s) have a non-finite bbox or score (first: result {first}, image_id "
                         f"{results[first].get('image_id')}); not written to {os.fspath(path)}")
    try:
        text = json.dumps(list(results), allow_nan=False)
    except ValueError as e:  # a NaN somewhere else than bbox / score
        raise ValueError(f"results not written to {os.fspath(path)}: {e}") from None
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise OutputWriteError(f"cannot write {os.fspath(path)}: cannot create {folder}: {e.strerror or e}") from e
    atomic_write_text(path, text)
