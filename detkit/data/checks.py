"""Dataset checks behind ``tools/check_dataset.py``: every problem with its file, and a summary.

What a path may be (:func:`find_sources` turns it into one dataset per split):

- ``coco``: an instances json (images in ``--images DIR``, else found by the standard layouts
  ``root/annotations/instances_<split>.json`` with ``root/<split>/`` or ``root/images/<split>/``),
  or a root holding ``annotations/instances_*.json`` (every split);
- ``yolo``: a dataset root with ``images/<split>/`` and ``labels/<split>/`` side by side (every
  split), an Ultralytics ``data.yaml`` (its ``path``, ``train`` / ``val`` / ``test`` folders and
  ``names``), or one images folder (labels in the same path with ``images`` -> ``labels``);
- ``voc``: a ``VOCdevkit/VOC2007``-style root.

Without a format, ``.json`` means coco, ``.yaml`` yolo, a folder with ``Annotations/`` voc, any
other folder yolo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detkit.data.base import DEFAULT_MAX_SIZE, DetDataset, ProblemLog
from detkit.data.sources import (
    YAML_FILES,
    coco_image_dirs,
    read_data_yaml,
    resolve_yaml_entry,
    voc_class_names,
    yaml_class_names,
)
from detkit.errors import Argument, DataError

__all__ = ["FORMATS", "DataSource", "check_dataset", "default_coco_images", "detect_format",
           "find_names_file", "find_sources"]

FORMATS = ("coco", "yolo", "voc")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
YAML_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DataSource:
    """One dataset to check: its format, a name for reports (the split) and the constructor's arguments."""

    fmt: str
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def default_coco_images(ann_file: str) -> str:
    """The first existing folder of :func:`coco_image_dirs` (the first one when none exists)."""
    dirs = coco_image_dirs(ann_file)
    return next((d for d in dirs if os.path.isdir(d)), dirs[0])


def find_names_file(img_dir: str) -> str | None:
    """``names.txt`` / ``data.yaml`` in the image folder or one of its ancestors."""
    for d in [Path(img_dir), *Path(img_dir).resolve().parents]:
        for name in ("names.txt", "data.yaml", "dataset.yaml"):
            if (d / name).is_file():
                return str(d / name)
    return None


def detect_format(path: str) -> str:
    """``coco`` for a json, ``yolo`` for a yaml or a folder, ``voc`` for a folder with ``Annotations/``.

    Raises:
        ValueError: a file of another kind.
    """
    p = Path(path)
    if p.is_dir():
        if (p / "Annotations").is_dir():
            return "voc"
        if (p / "annotations").is_dir() and any((p / "annotations").glob("instances_*.json")) \
                and not (p / "labels").is_dir():
            return "coco"
        return "yolo"
    if p.suffix.lower() == ".json":
        return "coco"
    if p.suffix.lower() in (".yaml", ".yml"):
        return "yolo"
    raise DataError("{path}: cannot tell the dataset format from the path; pass {fmt}",
                    values={"path": path, "fmt": Argument("fmt", metavar="(coco, yolo, voc)")})


def _has_images(folder: Path) -> bool:
    return folder.is_dir() and any(f.suffix.lower() in IMAGE_SUFFIXES for f in folder.iterdir())


def _yolo_labels(img_dir: Path, labels: str | None) -> str:
    """The labels folder of an images folder (``.../images/<x>`` -> ``.../labels/<x>``)."""
    if labels:
        return labels
    from detkit.data.yolo import default_label_dir

    try:
        return default_label_dir(str(img_dir))
    except ValueError:
        raise DataError("{img_dir}: no 'images' folder in the path to find the labels folder from; pass {labels}",
                        values={"img_dir": img_dir, "labels": Argument("labels", metavar="DIR")}) from None


def _yolo_from_yaml(path: Path, names: str | None, labels: str | None) -> list[DataSource]:
    data = read_data_yaml(path)
    root = Path(data.get("path") or ".")
    root = root if root.is_absolute() else path.parent / root
    if not names:  # the yaml's own names, checked as --data checks them (present, nc agreeing)
        yaml_class_names(path, data)
        names = str(path)
    sources: list[tuple[str, Path]] = []
    seen: dict[str, list[str]] = {}
    for split in YAML_SPLITS:
        entries = data.get(split) or []
        for entry in [entries] if isinstance(entries, str) else entries:

            folder = resolve_yaml_entry(root, entry)
            if folder.suffix == ".txt":
                raise DataError(f"{path}: {split}: {folder} is a list of image files; a data.yaml checked here "
                                "lists image folders (give the folder, or check the folder itself as yolo)")
            if not folder.is_dir():
                raise DataError(f"{path}: {split}: image folder not found: {folder}")
            key = os.path.realpath(folder)
            if key in seen:  # e.g. coco128.yaml: val is the train folder
                seen[key].append(split)
                continue
            seen[key] = [split]
            sources.append((key, folder))
    if not sources:
        raise DataError(f"{path}: no {' / '.join(YAML_SPLITS)} folder listed")
    _need_names(names, path)
    return [DataSource("yolo", "+".join(seen[key]),
                       dict(img_dir=str(folder), class_names=names, label_dir=_yolo_labels(folder, labels)))
            for key, folder in sources]


def _need_names(names: str | None, where: Path | str) -> None:
    if names is None:
        raise DataError("{where}: no class names found (names.txt or data.yaml); pass {names}",
                        values={"where": where, "names": Argument("names", metavar="FILE")})


def _yolo_sources(path: Path, names: str | None, labels: str | None) -> list[DataSource]:

    yaml_file = next((path / n for n in YAML_FILES if (path / n).is_file()), None) if path.is_dir() else None
    if path.is_file() or yaml_file is not None:
        return _yolo_from_yaml(yaml_file or path, names, labels)
    if (path / "images").is_dir() and not _has_images(path):  # a dataset root: every split
        splits = sorted(d for d in (path / "images").iterdir() if _has_images(d))
        if _has_images(path / "images"):
            splits.insert(0, path / "images")
        if not splits:
            raise DataError(f"{path}: no image files in {path / 'images'} or its sub-folders")
        names = names or find_names_file(str(path))
        _need_names(names, path)
        if labels and len(splits) > 1:
            raise DataError(f"{path}: one labels folder given but the root has {len(splits)} splits; "
                            "give a split's images folder with it")
        return [DataSource("yolo", d.name, dict(
                    img_dir=str(d), class_names=names,
                    label_dir=labels or str(path / "labels" / d.relative_to(path / "images"))))
                for d in splits]
    names = names or find_names_file(str(path))
    _need_names(names, path)
    return [DataSource("yolo", path.name, dict(img_dir=str(path), class_names=names,
                                               label_dir=_yolo_labels(path, labels)))]


def _coco_sources(path: Path, images: str | None) -> list[DataSource]:
    if path.is_dir():
        jsons = sorted((path / "annotations").glob("instances_*.json"))
        if not jsons:
            raise DataError(f"{path}: no annotations/instances_*.json; give the COCO json")
        if images and len(jsons) > 1:
            raise DataError(f"{path}: one image folder given but there are {len(jsons)} annotation files; "
                            "give one json with it")
    else:
        jsons = [path]
    sources = []
    for ann in jsons:
        img_dir = images
        if img_dir is None:
            tried = coco_image_dirs(str(ann))
            img_dir = next((d for d in tried if os.path.isdir(d)), None)
            if img_dir is None:
                raise DataError("{ann}: image folder not found (tried {tried}); pass {images}",
                                values={"ann": ann, "tried": ", ".join(tried),
                                        "images": Argument("images", metavar="DIR")})
        elif not os.path.isdir(img_dir):
            raise DataError(f"{img_dir}: image folder not found")
        sources.append(DataSource("coco", ann.stem.split("_", 1)[-1], dict(ann_file=str(ann), img_dir=img_dir)))
    return sources


def find_sources(path: str, fmt: str | None = None, images: str | None = None, names: str | None = None,
                 split: str | None = None, labels: str | None = None) -> list[DataSource]:
    """The datasets ``path`` holds, one per split (see the module doc for what ``path`` may be).

    Raises:
        DataError: the path does not exist; unknown or undetectable format; no class names for
            YOLO; images or labels that cannot be found; a yaml listing files instead of folders.
            ``argument`` names the argument that would fix it (``fmt``, ``images``, ``names``,
            ``labels``), when one would.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"dataset path does not exist: {path}")
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise DataError(f"unknown dataset format {fmt!r}; accepted: {', '.join(FORMATS)}")
    if fmt == "coco":
        return _coco_sources(p, images)
    if fmt == "yolo":
        return _yolo_sources(p, names, labels)
    from detkit.data.yolo import load_class_names

    class_names = list(load_class_names(names) if names else voc_class_names(p))
    return [DataSource("voc", split or p.name, dict(root=str(p), split=split, class_names=class_names))]


def _build(source: DataSource, read: dict[str, Any]) -> DetDataset:
    from detkit.data import CocoDataset, VocDataset, YoloDataset

    kind = {"coco": CocoDataset, "yolo": YoloDataset, "voc": VocDataset}[source.fmt]
    return kind(**source.kwargs, check_images=True, **read)


def check_dataset(path: str, fmt: str | None = None, images: str | None = None, names: str | None = None,
                  split: str | None = None, max_size: int | None = DEFAULT_MAX_SIZE,
                  exif_orientation: bool = True,
                  labels: str | None = None) -> tuple[ProblemLog, list[tuple[str, DetDataset]]]:
    """Parse every split of a dataset and decode every image as training reads it, collecting every problem.

    Args:
        path: see the module doc (COCO json or root, YOLO root / data.yaml / images folder, VOC root).
        fmt: ``coco``, ``yolo``, ``voc``, or None to tell from the path (:func:`detect_format`).
        images: COCO image folder (default: the standard layouts, :func:`coco_image_dirs`).
        names: class names file (YOLO default: the yaml's ``names``, else :func:`find_names_file`; VOC
            default: :func:`detkit.data.sources.voc_class_names`).
        split: VOC split list (default: every xml).
        max_size, exif_orientation: how images are read (see :class:`~detkit.data.base.DetDataset`).
        labels: YOLO labels folder of a single images folder (default: ``images`` -> ``labels``).

    Returns:
        The problems of all splits together, and ``(split name, dataset)`` for every split that
        had something usable. A split with nothing usable, a YOLO split without its labels
        folder and a split whose every image is background are problems too.

    Raises:
        ValueError: what :func:`find_sources` refuses (a usage mistake, not a problem of the data).
    """
    sources = find_sources(path, fmt, images, names, split, labels)
    log = ProblemLog(path)
    read = dict(max_size=max_size, exif_orientation=exif_orientation)
    found = []
    for source in sources:
        try:
            ds = _build(source, read)
        except ValueError as e:  # nothing usable, no labels folder, or not a dataset of this format
            where = str(source.kwargs.get("ann_file") or source.kwargs.get("img_dir") or source.kwargs.get("root")
                        or path)
            log.add(str(e).removeprefix(f"{where}: "), where)
            continue
        log.extend(ds.problems)
        found.append((source.name, ds))
    return log, found
