"""Any albumentations transform as a config entry: ``L(Albu)(transforms=[L(A.Blur)(p=0.1)])``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from detkit.data.transforms.compose import Transform

__all__ = ["Albu"]

Sample = dict[str, Any]


def _build(t: Any) -> Any:
    """An albumentations transform from an object or ``dict(type="Blur", blur_limit=3, p=0.1)``."""
    import albumentations as A

    if isinstance(t, Mapping) and "type" in t:
        kwargs = {k: v for k, v in t.items() if k != "type"}
        name = t["type"]
        cls = getattr(A, name, None) if isinstance(name, str) else name
        if cls is None:
            raise ValueError(
                f"Albu: albumentations has no transform {name!r}; accepted: any name in albumentations (e.g. 'Blur')"
            )
        return cls(**kwargs)
    if isinstance(t, (A.BasicTransform, A.BaseCompose)):
        return t
    raise ValueError(f"Albu: {t!r} is neither an albumentations transform nor a dict with 'type'")


class Albu(Transform):
    """Run an albumentations pipeline on the sample; boxes (and ignore regions) follow.

    Args:
        transforms: albumentations transforms, or dicts ``dict(type="Blur", p=0.1)``.
        bbox_params: an ``A.BboxParams`` or its keyword dict; default
            ``A.BboxParams(format="pascal_voc", label_fields=["labels"], clip=True)``. The format
            must be ``pascal_voc`` (xyxy pixels); ``min_area`` / ``min_visibility`` filter boxes.
        p: probability the whole pipeline runs.
    """

    def __init__(self, transforms: Sequence[Any], bbox_params: Any = None, p: float = 1.0) -> None:
        import albumentations as A

        if bbox_params is None:
            bbox_params = A.BboxParams(format="pascal_voc", label_fields=["labels"], clip=True)
        elif isinstance(bbox_params, Mapping):
            defaults = {"format": "pascal_voc", "label_fields": ["labels"], "clip": True}
            bbox_params = A.BboxParams(**{**defaults, **bbox_params})
        if bbox_params.format != "pascal_voc":
            raise ValueError(
                f"Albu: bbox_params.format is {bbox_params.format!r}; accepted: 'pascal_voc' (xyxy pixels)"
            )
        fields = list(bbox_params.label_fields or [])
        if "labels" not in fields:
            fields.append("labels")
        bbox_params.label_fields = fields + ["is_ignore"]
        self.label_fields = fields
        self.compose = A.Compose([_build(t) for t in transforms], bbox_params=bbox_params, p=p)

    def __call__(self, sample: Sample) -> Sample:
        boxes, ign = sample["boxes"], sample["ignore_boxes"]
        n, j = len(boxes), len(ign)
        extra = {
            f: np.concatenate([np.asarray(sample.get(f, np.zeros(n)))[:n], np.zeros(j)]) for f in self.label_fields
        }
        extra["labels"] = np.concatenate([sample["labels"], np.zeros(j, np.int64)])
        img = sample["img"]
        out = self.compose(
            image=img if img.flags.writeable else img.copy(),
            bboxes=np.concatenate([boxes, ign]).reshape(-1, 4),
            is_ignore=np.concatenate([np.zeros(n, bool), np.ones(j, bool)]),
            **extra,
        )
        out_boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
        is_ign = np.asarray(out["is_ignore"], bool).reshape(-1)
        sample["img"] = np.ascontiguousarray(out["image"])
        sample["boxes"] = out_boxes[~is_ign]
        sample["labels"] = np.asarray(out["labels"], np.int64).reshape(-1)[~is_ign]
        sample["ignore_boxes"] = out_boxes[is_ign]
        for f in self.label_fields:
            if f != "labels" and f in sample:
                sample[f] = np.asarray(out[f])[~is_ign]
        return sample
