"""YOLO txt layout: ``images/<split>/*.jpg`` with ``labels/<split>/*.txt`` beside them.

Each label line is ``class cx cy w h`` normalised to 0..1 (a polygon ``class x1 y1 x2 y2 ...`` with
at least 3 points is accepted and boxed). An image without a label file is background.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detkit.data.base import DEFAULT_MAX_SIZE, DetDataset, ProblemLog, clean_boxes, stem_image_ids
from detkit.data.imageio import check_image_file
from detkit.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "YoloDataset", "load_class_names", "parse_yolo_label"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Normalised overshoot past the image border clipped without a report (about 1 px at 1000 px).
NORM_TOLERANCE = 1e-3
# Normalised boxes smaller than this after clipping are dropped.
NORM_MIN_SIZE = 1e-6


def load_class_names(names: str | os.PathLike | Sequence[str] | Mapping[int, str]) -> list[str]:
    """Class names from a list, a ``{id: name}`` dict, or a file.

    Files: ``.txt`` one name per line; ``.json`` a list or dict; ``.yaml``/``.yml`` with a
    ``names`` list or dict (the Ultralytics data file).

    Raises:
        ValueError: unreadable file, or a dict whose ids are not ``0..n-1``.
    """
    if isinstance(names, (str, os.PathLike)):
        path = os.fspath(names)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise DataError(f"cannot read class names from {path}: {e}") from e
        if path.endswith(".json"):
            try:
                names = json.loads(text)
            except ValueError as e:
                raise DataError(f"{path}: not a json file of class names: {e}") from e
        elif path.endswith((".yaml", ".yml")):
            import yaml

            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise DataError(f"{path}: not a yaml file: {e}") from e
            names = data.get("names", data) if isinstance(data, dict) else data
        else:
            names = [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(names, Mapping):
        ids = sorted(int(k) for k in names)
        if ids != list(range(len(ids))):
            raise ValueError(
                f"class name ids must be 0..{len(ids) - 1}, got {ids[:10]}...; accepted: {{0: name, 1: ...}}"
            )
        by_key: Mapping[Any, Any] = names
        return [str(by_key[k] if k in by_key else by_key[str(k)]) for k in ids]
    if isinstance(names, Sequence) and not isinstance(names, str):
        return [str(n) for n in names]
    raise ValueError(f"class names must be a list, a dict or a file path; got {type(names).__name__}")


def parse_yolo_label(path: str, problems: ProblemLog) -> tuple[np.ndarray, np.ndarray]:
    """Read one label file; bad lines are counted and skipped.

    Returns:
        ``boxes (N, 4) float64`` normalised xyxy (unchecked values), ``labels (N,) int64``.
    """
    boxes: list[list[float]] = []
    labels: list[int] = []
    try:
        lines = Path(path).read_text(encoding="utf-8-sig", errors="replace").splitlines()
    except OSError as e:
        problems.add(f"cannot read label file: {e.strerror or e}", path)
        return np.zeros((0, 4)), np.zeros(0, np.int64)
    for n, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{n}"
        if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
            problems.add(f"label line has {len(fields)} fields, expected 5 (class cx cy w h) or a polygon", where)
            continue
        try:
            values = [float(v) for v in fields[1:]]
            cls = float(fields[0])
        except ValueError:
            problems.add("label line has a field that is not a number", where)
            continue
        if not np.isfinite(cls) or cls != int(cls):
            problems.add("class id is not an integer", where)
            continue
        if len(values) == 4:
            cx, cy, w, h = values
            boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        else:
            xy = np.array(values).reshape(-1, 2)  # (2P,) -> (P, 2) polygon points
            boxes.append([*xy.min(0), *xy.max(0)])
        labels.append(int(cls))
    return np.array(boxes, np.float64).reshape(-1, 4), np.array(labels, np.int64)


class YoloDataset(DetDataset):
    """Images with YOLO txt labels (the Ultralytics / coco128 layout).

    Args:
        img_dir: folder of images, e.g. ``coco128/images/train2017``; or a ``.txt`` list of image
            paths (one a line, relative ones relative to the list's folder); or a list of such
            folders / lists (an Ultralytics data.yaml's ``train: [a/images, b/images]``).
        class_names: names list, ``{id: name}`` dict, or a file (``names.txt`` one per line,
            ``.json``, or an Ultralytics ``.yaml``).
        label_dir: folder of ``.txt`` labels (one images folder only); default: each image's
            folder with its last ``images`` component replaced by ``labels``.
        pipeline: transforms applied to each sample.
        filter_empty: drop images without usable boxes.
        check_images: decode every image now (``tools/check_dataset.py`` does).
        seed: seed for picking a replacement when an image cannot be read.
        cache_size: decoded images kept per process (0: none); see :class:`DetDataset`.
        max_size: longest image side when read (larger images are shrunk); see :class:`DetDataset`.
        exif_orientation: apply EXIF orientation (see :class:`DetDataset`). Labels are normalised
            to the image as shown (EXIF orientation applied), as Ultralytics reads them.

    Image ids are unique by construction (:func:`~detkit.data.base.stem_image_ids`): the file
    stems as integers when every stem is a number and no two stems are the same number (COCO
    file names give COCO ids, so a COCO json of the same images evaluates the results), else the
    index in sorted file-name order (``1.jpg``, ``01.jpg`` and ``001.jpg`` get 0, 1 and 2, with a
    warning).

    A missing labels folder is an error (``ValueError``): every image would be background, which
    is a wrong path far more often than the intent; a split of background images on purpose has
    its labels folder, empty. A split where no image has a box is counted as a problem (a warning
    at load; ``tools/check_dataset.py`` reports it).
    """

    def __init__(
        self,
        img_dir: str | os.PathLike | Sequence[str],
        class_names: str | os.PathLike | Sequence[str] | Mapping[int, str],
        label_dir: str | None = None,
        pipeline: Callable | Sequence[Callable] | None = None,
        filter_empty: bool = False,
        check_images: bool = False,
        seed: int = 0,
        cache_size: int = 0,
        max_size: int | None = DEFAULT_MAX_SIZE,
        exif_orientation: bool = True,
    ) -> None:
        super().__init__(pipeline, seed, cache_size, max_size, exif_orientation)
        if isinstance(img_dir, (str, os.PathLike)):
            self.sources = [os.fspath(img_dir)]
        else:
            self.sources = [os.fspath(d) for d in img_dir]
        if not self.sources:
            raise ValueError("YoloDataset: img_dir is an empty list")
        self.img_dir = self.sources[0]
        listed = len(self.sources) > 1 or self.img_dir.lower().endswith(".txt")
        if label_dir and listed:
            raise ValueError(f"label_dir {label_dir} goes with one images folder, not with {self.sources}")
        self.label_dir = os.fspath(label_dir) if label_dir else None if listed else default_label_dir(self.img_dir)
        self.class_names = load_class_names(class_names)
        self.cat_ids = list(range(len(self.class_names)))
        self.ann_file = None  # no COCO json: the evaluator uses coco_dict()
        for src in self.sources:
            if not (os.path.isfile(src) if src.lower().endswith(".txt") else os.path.isdir(src)):
                raise DataError(f"image {'list' if src.lower().endswith('.txt') else 'folder'} not found: {src}")
        label_dirs = self._parse(filter_empty)
        missing = next((d for d in label_dirs if not os.path.isdir(d)), None)
        if self.records and missing is not None:
            raise DataError(
                f"{self.img_dir}: labels folder not found: {missing} (every image would be background); "
                "put each image's <name>.txt there, or create that folder, empty, if these images are background "
                "on purpose (a config's YoloDataset may name another folder: label_dir)"
            )
        if check_images:
            from detkit.data.base import check_images as _check

            _check(self)
        self._finish_init(self.img_dir)

    def _image_files(self) -> list[tuple[str, str]]:
        """``(image path, label path)`` of every image: a folder's files in sorted order, a list's in its order."""
        files = []
        for src in self.sources:
            if src.lower().endswith(".txt"):
                base = os.path.dirname(os.path.abspath(src))
                lines = Path(src).read_text(encoding="utf-8-sig").splitlines()
                paths = [os.path.normpath(os.path.join(base, s.strip())) for s in lines if s.strip()]
            else:
                paths = [os.path.join(src, f) for f in sorted(os.listdir(src)) if f.lower().endswith(IMAGE_EXTENSIONS)]
            for path in paths:
                folder = self.label_dir or default_label_dir(os.path.dirname(path))
                files.append((path, os.path.join(folder, os.path.splitext(os.path.basename(path))[0] + ".txt")))
        return files

    def _parse(self, filter_empty: bool) -> list[str]:
        """Read the labels into ``self.records``; returns the labels folders the images look in."""
        files = self._image_files()
        stems = [os.path.splitext(os.path.basename(p))[0] for p, _ in files]
        # one id per label file: stems (numbers stay COCO ids) unless two folders hold the same stem
        keys = stems if len(set(stems)) == len({lp for _, lp in files}) else [lp[:-4] for _, lp in files]
        ids = stem_image_ids(keys, self.img_dir)
        seen: dict[str, str] = {}
        for (path, label_path), stem, image_id in zip(files, keys, ids):
            name = os.path.basename(path)
            if stem in seen:
                self.problems.add("duplicate image id: another image has the same file stem (first kept)",
                                  f"{path} (same stem as {seen[stem]})")
                continue
            seen[stem] = name
            reason = check_image_file(path)
            if reason:
                self.problems.add(reason, path)
                self.problems.add("label row of a skipped image", label_path, _count_rows(label_path))
                continue
            if os.path.exists(label_path):
                norm, labels = parse_yolo_label(label_path, self.problems)
            else:
                norm, labels = np.zeros((0, 4)), np.zeros(0, np.int64)
            boxes, labels = clean_boxes(
                norm, labels, (1, 1), self.num_classes, self.problems, label_path,
                tolerance=NORM_TOLERANCE, min_size=NORM_MIN_SIZE,
            )
            if filter_empty and len(boxes) == 0:
                continue
            self.records.append({
                "img_path": path,
                "image_id": image_id,
                "boxes": boxes,  # normalised xyxy; scaled to pixels when read
                "labels": labels,
                "ignore_boxes": np.zeros((0, 4), np.float32),
                "size": None,
                "normalized": True,
            })
        label_dirs = list(dict.fromkeys(os.path.dirname(lp) for _, lp in files))
        if self.label_dir is not None or len(self.sources) == 1 and not self.img_dir.lower().endswith(".txt"):
            used = {lp for _, lp in files}
            for folder in [d for d in label_dirs if os.path.isdir(d)]:
                for f in sorted(os.listdir(folder)):
                    if f.endswith(".txt") and os.path.join(folder, f) not in used:
                        self.problems.add("label file has no image", os.path.join(folder, f))
        return label_dirs if files else [self.label_dir] if self.label_dir else []


def _count_rows(label_path: str) -> int:
    """Non-empty lines of a label file (0 when there is none)."""
    try:
        return sum(1 for line in Path(label_path).read_text(encoding="utf-8-sig", errors="replace").splitlines()
                   if line.strip())
    except OSError:
        return 0


def default_label_dir(img_dir: str) -> str:
    """``.../images/train`` -> ``.../labels/train`` (the last ``images`` component replaced)."""
    parts = Path(img_dir).parts
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            return str(Path(*parts[:i], "labels", *parts[i + 1:]))
    raise DataError(f"{img_dir}: no 'images' folder in the path to derive the labels folder from; pass label_dir")
