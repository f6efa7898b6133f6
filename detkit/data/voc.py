"""Pascal VOC layout: ``Annotations/*.xml``, ``JPEGImages/*.jpg``, ``ImageSets/Main/<split>.txt``."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from detkit.data.base import DEFAULT_MAX_SIZE, DetDataset, clean_boxes, stem_image_ids
from detkit.data.imageio import check_image_file
from detkit.errors import DataError

__all__ = ["VOC_CLASSES", "VocDataset"]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)


class VocDataset(DetDataset):
    """Pascal VOC xml annotations; objects marked ``difficult`` become ignore regions.

    Args:
        root: the ``VOC2007``-style folder holding ``Annotations``, ``JPEGImages``, ``ImageSets``.
        split: name of the list in ``ImageSets/Main`` (``train``, ``val``, ``trainval``, ``test``),
            or ``None`` for every xml in ``Annotations``.
        class_names: the classes, in label order (default: the 20 VOC classes).
        pipeline: transforms applied to each sample.
        filter_empty: drop images without usable boxes.
        check_images: decode every image now.
        seed: seed for picking a replacement when an image cannot be read.
        cache_size: decoded images kept per process (0: none); see :class:`DetDataset`.
        max_size: longest image side when read (larger images are shrunk); see :class:`DetDataset`.
        exif_orientation: apply EXIF orientation; see :class:`DetDataset`.

    Coordinates are VOC's 1-based inclusive pixels; ``x1 - 1, y1 - 1, x2, y2`` gives xyxy edges.
    Image ids are the stem's digits as an integer (``2008_000008`` -> ``2008000008``) when every
    stem has them and no two stems give the same number, else the index in the list
    (:func:`~detkit.data.base.stem_image_ids`: unique by construction).
    """

    def __init__(
        self,
        root: str,
        split: str | None = "trainval",
        class_names: Sequence[str] = VOC_CLASSES,
        pipeline: Callable | Sequence[Callable] | None = None,
        filter_empty: bool = False,
        check_images: bool = False,
        seed: int = 0,
        cache_size: int = 0,
        max_size: int | None = DEFAULT_MAX_SIZE,
        exif_orientation: bool = True,
    ) -> None:
        super().__init__(pipeline, seed, cache_size, max_size, exif_orientation)
        self.root = os.fspath(root)
        self.class_names = list(class_names)
        self.label_of = {n: i for i, n in enumerate(self.class_names)}
        self.cat_ids = list(range(len(self.class_names)))
        self.ann_file = None  # no COCO json: the evaluator uses coco_dict()
        stems = self._stems(split)
        ids = stem_image_ids(stems, self.root, strip="_")
        seen: set[str] = set()
        for image_id, stem in zip(ids, stems):
            if stem in seen:
                self.problems.add("duplicate image id (listed twice; first kept)", stem)
                continue
            seen.add(stem)
            rec = self._parse_xml(stem)
            if rec is None or (filter_empty and len(rec["boxes"]) == 0):
                continue
            rec["image_id"] = image_id
            self.records.append(rec)
        if check_images:
            from detkit.data.base import check_images as _check

            _check(self)
        self._finish_init(self.root)

    def _stems(self, split: str | None) -> list[str]:
        if split is None:
            ann_dir = os.path.join(self.root, "Annotations")
            if not os.path.isdir(ann_dir):
                raise DataError(f"{self.root}: no Annotations folder; accepted: a VOC root folder")
            return sorted(os.path.splitext(f)[0] for f in os.listdir(ann_dir) if f.endswith(".xml"))
        list_file = os.path.join(self.root, "ImageSets", "Main", f"{split}.txt")
        try:
            with open(list_file, encoding="utf-8") as f:
                return [line.split()[0] for line in f if line.strip()]
        except OSError as e:
            raise DataError(
                f"{list_file}: cannot read the split list ({e.strerror}); pass split=None to use every xml"
            ) from e

    def _parse_xml(self, stem: str) -> dict[str, Any] | None:
        xml_path = os.path.join(self.root, "Annotations", f"{stem}.xml")
        try:
            tree = ET.parse(xml_path).getroot()
        except (OSError, ET.ParseError) as e:
            self.problems.add(f"cannot parse annotation xml: {e}", xml_path)
            return None
        file_name = tree.findtext("filename") or f"{stem}.jpg"
        img_path = os.path.join(self.root, "JPEGImages", file_name)
        if not os.path.exists(img_path) and os.path.exists(os.path.join(self.root, "JPEGImages", f"{stem}.jpg")):
            img_path = os.path.join(self.root, "JPEGImages", f"{stem}.jpg")
        reason = check_image_file(img_path)
        if reason:
            self.problems.add(reason, img_path)
            self.problems.add("object of a skipped image", xml_path, len(tree.findall("object")))
            return None
        try:
            w = int(float(tree.findtext("size/width") or 0))
            h = int(float(tree.findtext("size/height") or 0))
        except (ValueError, OverflowError):  # not a number, NaN, inf
            w = h = 0
        boxes: list[list[float]] = []
        labels: list[int] = []
        hard: list[list[float]] = []
        for obj in tree.iter("object"):
            name = (obj.findtext("name") or "").strip()
            if name not in self.label_of:
                self.problems.add(f"unknown class name {name!r}", xml_path)
                continue
            try:
                texts = [obj.findtext(f"bndbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax")]
                x1, y1, x2, y2 = (float(t) for t in texts)  # type: ignore[arg-type]  # None: a TypeError, counted
            except (TypeError, ValueError):
                self.problems.add("bndbox missing or not numbers", xml_path)
                continue
            difficult = (obj.findtext("difficult") or "0").strip() == "1"
            (hard if difficult else boxes).append([x1 - 1, y1 - 1, x2, y2])
            if not difficult:
                labels.append(self.label_of[name])
        size = (h, w) if h > 0 and w > 0 else (1 << 30, 1 << 30)
        b, lab = clean_boxes(np.array(boxes), np.array(labels), size, self.num_classes, self.problems, xml_path)
        ign, _ = clean_boxes(np.array(hard), np.zeros(len(hard)), size, None, self.problems, xml_path)
        return {"img_path": img_path, "boxes": b, "labels": lab, "ignore_boxes": ign,
                "size": (h, w) if h > 0 and w > 0 else None}
