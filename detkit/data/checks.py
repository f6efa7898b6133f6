"""Dataset checks behind ``tools/check_dataset.py``: every problem with its file, and a summary."""

from __future__ import annotations

import os
from pathlib import Path

from detkit.data.base import DEFAULT_MAX_SIZE, DetDataset, ProblemLog

__all__ = ["FORMATS", "check_dataset", "default_coco_images", "find_names_file"]

FORMATS = ("coco", "yolo", "voc")


def default_coco_images(ann_file: str) -> str:
    """``root/annotations/instances_val2017.json`` -> ``root/val2017``."""
    p = Path(ann_file)
    split = p.stem.split("_", 1)[-1]
    return str(p.parent.parent / split)


def find_names_file(img_dir: str) -> str | None:
    """``names.txt`` / ``data.yaml`` in the image folder or one of its ancestors."""
    for d in [Path(img_dir), *Path(img_dir).resolve().parents]:
        for name in ("names.txt", "data.yaml", "dataset.yaml"):
            if (d / name).is_file():
                return str(d / name)
    return None


def check_dataset(path: str, fmt: str, images: str | None = None, names: str | None = None,
                  split: str | None = None, max_size: int | None = DEFAULT_MAX_SIZE,
                  exif_orientation: bool = True) -> tuple[ProblemLog, DetDataset | None]:
    """Parse a dataset and decode every image as training reads it, collecting every problem.

    Args:
        path: COCO json, YOLO image folder, or VOC root.
        fmt: ``coco``, ``yolo`` or ``voc``.
        images: COCO image folder (default: see :func:`default_coco_images`).
        names: YOLO class names file (default: found by :func:`find_names_file`).
        split: VOC split list (default: every xml).
        max_size, exif_orientation: how images are read (see :class:`~detkit.data.base.DetDataset`).

    Returns:
        The problems and the dataset (None when nothing usable was found; that is a problem too).

    Raises:
        ValueError: unknown format or missing class names for YOLO.
    """
    from detkit.data import CocoDataset, VocDataset, YoloDataset

    if fmt not in FORMATS:
        raise ValueError(f"unknown dataset format {fmt!r}; accepted: {', '.join(FORMATS)}")
    log = ProblemLog(path)
    if not os.path.exists(path):
        log.add("dataset path does not exist", path)
        return log, None
    if fmt == "yolo":
        names = names or find_names_file(path)
        if names is None:
            raise ValueError(f"{path}: no class names found (names.txt or data.yaml); pass --names FILE")
    read = dict(max_size=max_size, exif_orientation=exif_orientation)
    try:
        if fmt == "coco":
            ds: DetDataset = CocoDataset(path, images or default_coco_images(path), check_images=True, **read)
        elif fmt == "yolo":
            ds = YoloDataset(path, names, check_images=True, **read)
        else:
            ds = VocDataset(path, split=split, check_images=True, **read)
    except ValueError as e:  # nothing usable, or not a dataset of this format
        log.add(str(e), path)
        return log, None
    return ds.problems, ds
