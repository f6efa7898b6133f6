"""Anchor sizes for a dataset by k-means on box widths/heights with the 1 - IoU distance.

Usage::

    python tools/kmeans_anchors.py data/coco/annotations/instances_train2017.json --format coco
    python tools/kmeans_anchors.py data/coco128 --format yolo --num 9 --size 640

Boxes are scaled as a letterbox to ``--size`` scales them (longest image side -> size), boxes
smaller than ``--min-size`` pixels on a side are dropped, then IoU k-means (YOLOv2's method: the
IoU of two sizes as if they shared a centre; cluster centres are medians) runs ``--restarts``
times from k-means++ seeds and keeps the result with the highest mean best IoU. Prints the
anchors sorted by area and grouped per level (ready for ``YOLOAnchorGenerator(base_sizes=...)``),
the mean best IoU they reach, and that of detkit's default YOLOv4 COCO anchors.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

import numpy as np

from detkit.argtypes import nonnegative_float, nonnegative_int, positive_int
from detkit.cli import ArgumentParser, run_cli
from detkit.errors import DataError, UsageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


# ----- reading box sizes ---------------------------------------------------------------------


def coco_sizes(ann_file: Path, size: int) -> np.ndarray:
    """``(K, 2)`` letterbox-scaled (w, h) of the non-crowd boxes of a COCO json."""
    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
            coco = COCO(str(ann_file))
        rows = []
        for ann in coco.dataset.get("annotations", []):
            if ann.get("iscrowd", 0):
                continue
            img = coco.imgs[ann["image_id"]]
            scale = size / max(img["width"], img["height"])
            rows.append((float(ann["bbox"][2]) * scale, float(ann["bbox"][3]) * scale))
    except (AssertionError, AttributeError, KeyError, IndexError, TypeError, ValueError, OSError) as e:  # not COCO
        raise DataError(f"{ann_file}: not a COCO instances json ({type(e).__name__}: {e})") from None
    return np.asarray(rows, dtype=np.float64).reshape(-1, 2)


def _image_for_label(label: Path, labels_root: Path, images_root: Path) -> Path | None:
    stem = images_root / label.relative_to(labels_root).with_suffix("")
    for suffix in IMAGE_SUFFIXES:
        for candidate in (stem.with_suffix(suffix), stem.with_suffix(suffix.upper())):
            if candidate.exists():
                return candidate
    return None


def yolo_sizes(root: Path, size: int) -> np.ndarray:
    """``(K, 2)`` letterbox-scaled (w, h) from YOLO txt labels (``class cx cy w h``, normalised).

    ``root`` is a dataset folder holding ``labels/`` and ``images/`` (mirrored trees); image
    sizes are read from the images (needed to undo the normalisation).
    """
    import cv2

    labels_root, images_root = root / "labels", root / "images"
    if not labels_root.is_dir() or not images_root.is_dir():
        raise DataError(f"{root} must hold labels/ and images/ folders (YOLO layout)")
    rows = []
    for label in sorted(labels_root.rglob("*.txt")):
        lines = [ln.split() for ln in label.read_text().splitlines() if ln.strip()]
        if not lines:
            continue
        image_path = _image_for_label(label, labels_root, images_root)
        image = None if image_path is None else cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise DataError(f"{label}: no readable image for this label under {images_root}")
        h, w = image.shape[:2]
        scale = size / max(w, h)
        for parts in lines:
            try:
                rows.append((float(parts[3]) * w * scale, float(parts[4]) * h * scale))
            except (IndexError, ValueError):
                raise DataError(f"{label}: expected 'class cx cy w h', got {' '.join(parts)!r}") from None
    return np.asarray(rows, dtype=np.float64).reshape(-1, 2)


def find_coco_json(path: Path) -> Path:
    """``path`` itself when a file, else its single ``annotations/instances_*.json``."""
    if path.is_file():
        return path
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    found = sorted((path / "annotations").glob("instances_*.json"))
    if len(found) != 1:
        raise DataError(f"{path}: give the annotation json itself; found {[p.name for p in found]} "
                         "under annotations/ (need exactly one instances_*.json)")
    return found[0]


# ----- IoU k-means ---------------------------------------------------------------------------


def wh_iou(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """IoU of sizes as if centred together: ``wh (K, 2)``, ``anchors (A, 2)`` -> ``(K, A)``."""
    inter = np.minimum(wh[:, None, 0], anchors[None, :, 0]) * np.minimum(wh[:, None, 1], anchors[None, :, 1])
    union = wh.prod(1)[:, None] + anchors.prod(1)[None, :] - inter
    return inter / union


def mean_best_iou(wh: np.ndarray, anchors: np.ndarray) -> float:
    """Mean over boxes of the IoU with their best-matching anchor."""
    return float(wh_iou(wh, anchors).max(1).mean())


def _seed_centres(wh: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding with the 1 - IoU distance."""
    centres = [wh[rng.integers(len(wh))]]
    for _ in range(1, k):
        d = 1.0 - wh_iou(wh, np.asarray(centres)).max(1)
        p = d**2
        p = p / p.sum() if p.sum() > 0 else np.full(len(wh), 1.0 / len(wh))
        centres.append(wh[rng.choice(len(wh), p=p)])
    return np.asarray(centres, dtype=np.float64)


def kmeans_iou(wh: np.ndarray, k: int, seed: int = 0, restarts: int = 5, max_iter: int = 300) -> np.ndarray:
    """Cluster ``wh (K, 2)`` into ``k`` sizes with the 1 - IoU distance (median centres).

    Returns:
        ``(k, 2)`` anchors sorted by area, from the restart with the highest mean best IoU.
    """
    if k < 1 or len(wh) < k:
        raise ValueError(f"need at least k={k} boxes (k >= 1) to cluster, got {len(wh)}")
    rng = np.random.default_rng(seed)
    best: np.ndarray | None = None
    best_fit = -1.0
    for _ in range(restarts):
        centres = _seed_centres(wh, k, rng)
        assign = None
        for _ in range(max_iter):
            new_assign = wh_iou(wh, centres).argmax(1)
            if assign is not None and np.array_equal(new_assign, assign):
                break
            assign = new_assign
            for j in range(k):
                members = wh[assign == j]
                if len(members):  # an empty cluster keeps its centre
                    centres[j] = np.median(members, axis=0)
        fit = mean_best_iou(wh, centres)
        if fit > best_fit:
            best, best_fit = centres.copy(), fit
    assert best is not None  # restarts >= 1 and a fit is >= 0
    return best[np.argsort(best.prod(1), kind="stable")]


def group_levels(anchors: np.ndarray, levels: int) -> list[list[tuple[float, float]]]:
    """Split area-sorted ``anchors (k, 2)`` into ``levels`` equal groups of rounded (w, h)."""
    if len(anchors) % levels:
        raise ValueError(f"{len(anchors)} anchors do not split into {levels} equal levels")
    per = len(anchors) // levels
    return [[(round(float(w), 1), round(float(h), 1)) for w, h in anchors[i * per:(i + 1) * per]]
            for i in range(levels)]


# ----- command line --------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", type=Path, help="COCO json (or folder with annotations/) or YOLO folder")
    p.add_argument("--format", choices=("coco", "yolo"), default="coco")
    p.add_argument("--num", type=positive_int, default=9, help="number of anchors")
    p.add_argument("--levels", type=positive_int, default=3, help="feature levels to spread them over")
    p.add_argument("--size", type=positive_int, default=640, help="letterbox input size")
    p.add_argument("--min-size", type=nonnegative_float, default=2.0, help="drop boxes smaller (pixels) on a side")
    p.add_argument("--restarts", type=positive_int, default=5)
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    from detkit.anchors import YOLOV4_COCO_ANCHORS

    if args.num % args.levels:  # the flags first, before any file is read
        raise UsageError(f"--num ({args.num}) must be a multiple of --levels ({args.levels})")
    if args.format == "coco":
        wh = coco_sizes(find_coco_json(args.dataset), args.size)
    else:
        wh = yolo_sizes(args.dataset, args.size)
    wh = wh[(wh >= args.min_size).all(1)]
    if len(wh) < args.num:
        raise DataError(f"{args.dataset}: {len(wh)} boxes of at least {args.min_size} px; k-means for --num "
                        f"{args.num} anchors needs at least {args.num}")
    anchors = kmeans_iou(wh, args.num, seed=args.seed, restarts=args.restarts)
    grouped = group_levels(anchors, args.levels)
    default = np.asarray([wh_ for level in YOLOV4_COCO_ANCHORS for wh_ in level], dtype=np.float64)
    fit, default_fit = mean_best_iou(wh, anchors), mean_best_iou(wh, default)
    if args.json:
        print(json.dumps(dict(boxes=len(wh), anchors=grouped, mean_best_iou=fit, default_mean_best_iou=default_fit)))
        return
    print(f"{len(wh)} boxes, letterboxed to {args.size}")
    for i, level in enumerate(grouped):
        print(f"level {i}: {level}")
    print(f"base_sizes = {grouped}")
    print(f"mean best IoU: {fit:.4f} (default YOLOv4 COCO anchors: {default_fit:.4f})")


def main(argv: list[str] | None = None) -> int:
    """Exit status 0, or 2 for a usage or data mistake (``error: ...`` on stderr)."""
    return run_cli(lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
