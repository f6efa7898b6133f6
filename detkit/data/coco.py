"""COCO-format detection dataset (instances json) read through pycocotools."""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeGuard

import numpy as np
from pycocotools.coco import COCO

from detkit.data.base import DEFAULT_MAX_SIZE, DetDataset, ProblemLog, clean_boxes
from detkit.data.imageio import check_image_file
from detkit.errors import DataError

__all__ = ["COCO_CLASSES", "CocoDataset", "load_coco_json"]

# The 80 COCO classes in label order (sorted category id), as in Ultralytics' YOLO labels.
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)


def load_coco_json(ann_file: str) -> dict[str, Any]:
    """Read and validate the top level of a COCO instances json.

    Raises:
        ValueError: unreadable json, or not a dict with ``images``, ``annotations`` and
            ``categories`` lists.
    """
    try:
        with open(ann_file, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{ann_file}: cannot read a COCO json: {e}") from e
    accepted = "a dict with 'images', 'annotations' and 'categories' lists (COCO instances format)"
    if not isinstance(data, dict):
        raise DataError(f"{ann_file}: not a COCO json: top level is {type(data).__name__}; accepted: {accepted}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{ann_file}: not a COCO json: {key!r} missing or not a list; accepted: {accepted}")
    return data


def number_list(value: Any, n: int) -> list[float] | None:
    """``value`` as ``n`` floats when it is a list of ``n`` JSON numbers (not strings, not booleans)."""
    if not isinstance(value, (list, tuple)) or len(value) != n:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return None
    return [float(v) for v in value]


def crowd_flag(value: Any) -> bool | None:
    """``iscrowd`` as a bool: 0 / 1 (or JSON false / true); None for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    return None


def _positive_int(value: Any) -> int | None:
    """``value`` as a positive int (ints and integral floats), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value != int(value):
        return None
    return int(value)


def _is_id(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


class CocoDataset(DetDataset):
    """COCO instances json + image folder.

    Category ids are mapped to contiguous labels in sorted-id order: ``label = cat_ids.index(id)``
    and back with ``dataset.cat_ids[label]`` when writing results. Crowd boxes (``iscrowd=1``)
    become ``ignore_boxes`` and are never positives. Images without annotations are kept as
    background unless ``filter_empty``.

    Entries lacking a required field are skipped and counted, each with its reason: images
    without an integer ``id`` or a ``file_name``, categories without an integer ``id``,
    annotations whose ``image_id`` / ``category_id`` is unknown, whose ``bbox`` is not 4
    numbers (strings such as ``"12"`` included) or whose ``iscrowd`` is not 0 / 1 (a missing one
    is 0), and the annotations of images that were skipped. A file with no usable category
    or image raises ``ValueError`` naming the file and the field.

    Args:
        ann_file: the instances json (the COCO evaluator reads the same file: ``dataset.ann_file``).
        img_dir: folder holding the images named by ``file_name``.
        pipeline: transforms (a list or a Compose) applied to each sample.
        filter_empty: drop images with no usable (non-crowd) box.
        class_names: override the json's category names (one per category).
        check_images: decode every image now (slow; what ``tools/check_dataset.py`` does).
        seed: seed for picking a replacement when an image cannot be read.
        cache_size: decoded images kept per process (0: none); see :class:`DetDataset`.
        max_size: longest image side when read (larger images are shrunk); see :class:`DetDataset`.
        exif_orientation: apply EXIF orientation; see :class:`DetDataset`.
    """

    def __init__(
        self,
        ann_file: str,
        img_dir: str,
        pipeline: Callable | Sequence[Callable] | None = None,
        filter_empty: bool = False,
        class_names: Sequence[str] | None = None,
        check_images: bool = False,
        seed: int = 0,
        cache_size: int = 0,
        max_size: int | None = DEFAULT_MAX_SIZE,
        exif_orientation: bool = True,
    ) -> None:
        super().__init__(pipeline, seed, cache_size, max_size, exif_orientation)
        self.ann_file = os.fspath(ann_file)
        self.img_dir = os.fspath(img_dir)
        data = load_coco_json(self.ann_file)
        self.coco = self._build_coco(data)
        cats = self._categories(data["categories"])
        self.cat_ids: list[int] = sorted(cats)
        self.cat_to_label = {c: i for i, c in enumerate(self.cat_ids)}
        if class_names is not None and len(class_names) != len(self.cat_ids):
            raise ValueError(
                f"class_names has {len(class_names)} names but {self.ann_file} has "
                f"{len(self.cat_ids)} categories; pass one name per category or None"
            )
        self.class_names = list(class_names) if class_names else [cats[c] for c in self.cat_ids]
        self._parse(data, filter_empty)
        if check_images:
            from detkit.data.base import check_images as _check

            _check(self)
        self._finish_init(self.ann_file)

    @staticmethod
    def _build_coco(data: dict[str, Any]) -> COCO:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco = COCO()
            coco.dataset = data
            try:
                coco.createIndex()
            except (KeyError, TypeError):
                coco = COCO()  # entries without ids: keep an empty index, _parse counts them
        return coco

    def _categories(self, entries: list[Any]) -> dict[int, str]:
        """``{id: name}`` of the usable categories; the others counted.

        Raises:
            ValueError: no usable category.
        """
        cats: dict[int, str] = {}
        for c in entries:
            if not isinstance(c, dict) or not _is_id(c.get("id")):
                self.problems.add("category entry without an integer 'id'", f"{self.ann_file} category {c!r:.60}")
                continue
            if c["id"] in cats:
                self.problems.add("duplicate category id (first entry kept)", f"{self.ann_file} category {c['id']}")
                continue
            if "name" not in c:
                self.problems.add("category entry without 'name' (its id is the name)",
                                  f"{self.ann_file} category {c['id']}")
            cats[c["id"]] = str(c.get("name", c["id"]))
        if not cats:
            raise DataError(
                f"{self.ann_file}: no usable entry in 'categories' ({len(entries)} entries); "
                "accepted: objects with an integer 'id' and a 'name'"
            )
        return cats

    def _images(self, entries: list[Any]) -> dict[int, dict[str, Any]]:
        """``{id: entry}`` of the image entries with an integer ``id`` and a ``file_name``."""
        images: dict[int, dict[str, Any]] = {}
        for im in entries:
            if not isinstance(im, dict) or not _is_id(im.get("id")):
                self.problems.add("image entry without an integer 'id'", f"{self.ann_file} image {im!r:.60}")
            elif not isinstance(im.get("file_name"), str) or not im["file_name"]:
                self.problems.add("image entry without 'file_name'", f"{self.ann_file} image {im['id']}")
            elif im["id"] in images:
                self.problems.add("duplicate image id (first entry kept)", f"{im['file_name']} (image {im['id']})")
            else:
                images[im["id"]] = im
        return images

    def _parse(self, data: dict[str, Any], filter_empty: bool) -> None:
        images = self._images(data["images"])
        anns: dict[int, list[dict[str, Any]]] = {i: [] for i in images}
        for ann in data["annotations"]:
            if not isinstance(ann, dict) or not _is_id(ann.get("image_id")) or ann["image_id"] not in anns:
                self.problems.add("annotation for an unknown image id", f"{self.ann_file} ann {_ann_id(ann)}")
                continue
            anns[ann["image_id"]].append(ann)
        for image_id, im in images.items():
            path = os.path.join(self.img_dir, im["file_name"])
            reason = check_image_file(path)
            if reason:
                self.problems.add(reason, path)
                self.problems.add("annotation of a skipped image", path, len(anns[image_id]))
                continue
            rec = self._record(image_id, im, path, anns[image_id])
            if filter_empty and len(rec["boxes"]) == 0:
                continue
            self.records.append(rec)

    def _record(self, image_id: int, im: dict[str, Any], path: str, anns: list[dict[str, Any]]) -> dict[str, Any]:
        h, w = _positive_int(im.get("height")), _positive_int(im.get("width"))
        if h is None or w is None:
            self.problems.add("image entry without a valid 'width'/'height' (size read from the file)", path)
        boxes: list[list[float]] = []
        labels: list[int] = []
        crowd: list[list[float]] = []
        for ann in anns:
            bbox = number_list(ann.get("bbox"), 4)
            where = f"{path} (ann {_ann_id(ann)})"
            if bbox is None:
                self.problems.add("annotation bbox is not 4 numbers", where)
                continue
            cat = ann.get("category_id")
            label = self.cat_to_label.get(cat, -1) if isinstance(cat, int) and _is_id(cat) else -1
            if label < 0:
                self.problems.add("annotation with an unknown category_id", where)
                continue
            is_crowd = crowd_flag(ann.get("iscrowd", 0))
            if is_crowd is None:
                self.problems.add("annotation iscrowd is not 0 or 1", where)
                continue
            xyxy = [bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]]
            (crowd if is_crowd else boxes).append(xyxy)
            if not is_crowd:
                labels.append(label)
        size = (h, w) if h and w else None
        clip = size or (1 << 30, 1 << 30)  # unknown size: clipped when read
        b, lab = clean_boxes(np.array(boxes), np.array(labels), clip, len(self.cat_ids), self.problems, path)
        ignore, _ = clean_boxes(np.array(crowd), np.zeros(len(crowd)), clip, None, ProblemLog(), path)
        return {"img_path": path, "image_id": image_id, "boxes": b, "labels": lab, "ignore_boxes": ignore,
                "size": size}


def _ann_id(ann: Any) -> str:
    return str(ann.get("id", "?")) if isinstance(ann, dict) else "?"
