"""Detector output -> COCO result dicts, and writing them as a COCO results json."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["detections_to_coco_results", "write_coco_results"]


def detections_to_coco_results(
    detections: Sequence[Mapping[str, Tensor]],
    image_ids: Sequence[int] | Tensor,
    cat_ids: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Turn a batch of detections into COCO result dicts.

    Args:
        detections: one dict per image with ``boxes (K, 4)`` xyxy in original-image pixels,
            ``scores (K,)`` and ``labels (K,)`` (contiguous class indices 0..C-1), as
            ``Detector.predict`` returns.
        image_ids: ``(B,)`` COCO image ids of the batch (``batch["image_ids"]``).
        cat_ids: COCO category id of each class index (``dataset.cat_ids``); ``None`` keeps the
            class index as the category id.

    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]``, ordered image by image.
    """
    ids = image_ids.tolist() if isinstance(image_ids, Tensor) else list(image_ids)
    if len(ids) != len(detections):
        raise ValueError(f"{len(detections)} detection dicts but {len(ids)} image ids; pass one id per image")
    out: list[dict[str, Any]] = []
    for image_id, det in zip(ids, detections):
        boxes = det["boxes"].detach().float().cpu()
        if boxes.numel() == 0:
            continue
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)  # (K, 4) xyxy -> xywh
        labels = det["labels"].detach().cpu().long().tolist()
        if cat_ids is not None and labels and max(labels) >= len(cat_ids):
            raise ValueError(f"label {max(labels)} has no category id: cat_ids has {len(cat_ids)} entries")
        for box, score, label in zip(xywh.tolist(), det["scores"].detach().float().cpu().tolist(), labels):
            out.append({
                "image_id": int(image_id),
                "category_id": int(cat_ids[label]) if cat_ids is not None else int(label),
                "bbox": box,
                "score": float(score),
            })
    return out


def write_coco_results(results: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """Write COCO result dicts as a json list (the format COCO's evaluation server takes)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(list(results), f)
