"""A synthetic "shapes" detection set written in COCO format: the demo's and end-to-end tests' data.

Five classes of saturated shapes (rectangle, ellipse, triangle, star, cross; each class has its
own hue, jittered) on muted textured backgrounds (noise, gradients, stripes, checkers). Sizes run
from ~8 px to ~70% of the image, mostly >= 12 px; 1-6 objects per image; a new object may cover at
most :data:`MAX_COVER` of an earlier one's box, so every box shows most of its object.

Deterministic: image ``i`` of a split depends only on ``(seed, split, i)``, however many processes
generate it. Generated only into a missing or empty folder, never over existing files; an existing
set is used as it is (a warning says when its recorded settings differ from the asked ones).
Layout (COCO style)::

    root/annotations/instances_train.json   root/train/000000.jpg ...
    root/annotations/instances_val.json     root/val/000000.jpg ...
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from detkit.data.coco import CocoDataset
from detkit.errors import DataError, OutputError
from detkit.io import LockHolder, PidLock, atomic_write

__all__ = ["SHAPE_CLASSES", "ShapesDataset", "ensure_shapes_dataset", "make_shape_image", "make_shapes_dataset"]

SHAPE_CLASSES = ("rectangle", "ellipse", "triangle", "star", "cross")
# OpenCV hue (0..179) of each class: red, green, blue, yellow, magenta.
CLASS_HUES = (0, 60, 120, 30, 150)
MAX_OBJECTS = 6
# A new object's box may cover at most this fraction of an earlier object's box.
MAX_COVER = 0.3
MIN_SIZE, SMALL_SIZE, MAX_SIZE_FRAC = 8, 12, 0.7
SPLIT_OFFSETS = {"train": 0, "val": 1}
FORMAT_VERSION = 1
# Marker file in the root while a generation runs; removed when both annotation files are written.
GENERATING = ".shapes-generating.json"

logger = logging.getLogger("detkit.data")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """``(size, size, 3) uint8`` muted texture: noise, gradient, stripes or checkers."""
    kind = rng.integers(4)
    base = rng.uniform(60, 190, 3)
    if kind == 0:
        small = rng.normal(0, 25, (size // 8, size // 8, 3))
        tex = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC) + rng.normal(0, 8, (size, size, 3))
    elif kind == 1:
        t = np.linspace(-1, 1, size)
        angle = rng.uniform(0, math.pi)
        grad = np.cos(angle) * t[None, :] + np.sin(angle) * t[:, None]  # (size, size)
        tex = grad[..., None] * rng.uniform(-50, 50, 3)
    elif kind == 2:
        period = rng.uniform(8, 40)
        angle = rng.uniform(0, math.pi)
        xs = np.arange(size)
        phase = (np.cos(angle) * xs[None, :] + np.sin(angle) * xs[:, None]) * (2 * math.pi / period)
        tex = np.sin(phase)[..., None] * rng.uniform(-30, 30, 3)
    else:
        cell = int(rng.integers(10, 48))
        xs = np.arange(size) // cell
        tex = (((xs[None, :] + xs[:, None]) % 2) * 2 - 1)[..., None] * rng.uniform(-25, 25, 3)
    img = np.clip(base + tex, 0, 255).astype(np.uint8)
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    hsv[..., 1] = np.minimum(hsv[..., 1], 50)  # muted: shapes are the saturated things
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _polygon(cls: int, cx: float, cy: float, w: float, h: float, rng: np.random.Generator) -> np.ndarray:
    """``(P, 2) int32`` outline of a class-``cls`` shape fitting a ``w x h`` box centred at (cx, cy)."""
    if cls == 0:  # rectangle, slightly rotated
        pts = cv2.boxPoints(((cx, cy), (w, h), float(rng.uniform(-15, 15))))
    elif cls == 1:  # ellipse
        pts = np.asarray(cv2.ellipse2Poly((int(cx), int(cy)), (max(1, int(w / 2)), max(1, int(h / 2))),
                                          int(rng.uniform(0, 180)), 0, 360, 8), dtype=np.float64)
    elif cls == 2:  # triangle, apex up or down
        s = 1 if rng.random() < 0.5 else -1
        pts = np.array([[cx, cy - s * h / 2], [cx - w / 2, cy + s * h / 2], [cx + w / 2, cy + s * h / 2]])
    elif cls == 3:  # five-pointed star
        a = np.arange(10) * math.pi / 5 - math.pi / 2 + rng.uniform(-0.3, 0.3)
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        pts = np.stack([cx + r * np.cos(a) * w / 2, cy + r * np.sin(a) * h / 2], 1)
    else:  # cross (plus sign)
        tx, ty = w / 6, h / 6
        xs = [-tx, tx, tx, w / 2, w / 2, tx, tx, -tx, -tx, -w / 2, -w / 2, -tx]
        ys = [-h / 2, -h / 2, -ty, -ty, ty, ty, h / 2, h / 2, ty, ty, -ty, -ty]
        pts = np.stack([cx + np.array(xs), cy + np.array(ys)], 1)
    return np.round(pts).astype(np.int32)


def _color(cls: int, rng: np.random.Generator) -> tuple[int, int, int]:
    hue = (CLASS_HUES[cls] + rng.integers(-5, 6)) % 180
    hsv = np.array([[[hue, rng.integers(170, 256), rng.integers(150, 256)]]], np.uint8)
    r, g, b = (int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])
    return r, g, b


def _cover(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of box ``b`` (xyxy) covered by box ``a``."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return iw * ih / max((b[2] - b[0]) * (b[3] - b[1]), 1e-9)


def make_shape_image(seed: int, size: int = 320) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One image and its objects, fully determined by ``seed``.

    Returns:
        ``img (size, size, 3) uint8`` RGB and a list of ``{"label", "box" (xyxy edges), "area"}``.
    """
    rng = np.random.default_rng(seed)
    img = _background(rng, size)
    objects: list[dict[str, Any]] = []
    target = int(rng.integers(1, MAX_OBJECTS + 1))
    for _ in range(target * 10):
        if len(objects) == target:
            break
        cls = int(rng.integers(len(SHAPE_CLASSES)))
        lo = MIN_SIZE if rng.random() < 0.1 else SMALL_SIZE
        side = math.exp(rng.uniform(math.log(lo), math.log(MAX_SIZE_FRAC * size)))
        aspect = math.exp(rng.uniform(-0.4, 0.4))
        w, h = side * aspect, side / aspect
        if max(w, h) > size - 4:
            continue
        cx, cy = rng.uniform(w / 2 + 2, size - w / 2 - 2), rng.uniform(h / 2 + 2, size - h / 2 - 2)
        pts = _polygon(cls, cx, cy, w, h, rng)
        box = np.array([*pts.min(0), *(pts.max(0) + 1)], np.float64).clip(0, size)
        if min(box[2] - box[0], box[3] - box[1]) < MIN_SIZE - 1:
            continue
        if any(_cover(box, o["box"]) > MAX_COVER for o in objects):
            continue
        cv2.fillPoly(img, [pts], _color(cls, rng), lineType=cv2.LINE_8)
        objects.append({"label": cls, "box": box, "area": float(max(cv2.contourArea(pts), 1.0))})
    return img, objects


def _image_seed(seed: int, split: str, index: int) -> int:
    return (seed * 1_000_003 + SPLIT_OFFSETS.get(split, 2) * 100_000_007 + index) % 2**63


def _write_one(args: tuple[str, int, str, int, int]) -> list[dict[str, Any]]:
    out_dir, seed, split, index, size = args
    img, objects = make_shape_image(_image_seed(seed, split, index), size)
    cv2.imwrite(os.path.join(out_dir, f"{index:06d}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 92])
    return objects


def _params_text(info: dict[str, Any]) -> str:
    return (f"{info.get('train', '?')} train / {info.get('val', '?')} val images of {info.get('size', '?')} px, "
            f"seed {info.get('seed', '?')}")


def _ann_paths(root: str) -> dict[str, str]:
    return {s: os.path.join(root, "annotations", f"instances_{s}.json") for s in ("train", "val")}


def _read_set(root: str) -> list[dict[str, Any]] | None:
    """The ``info`` of both annotation files of a complete set under ``root``; None when incomplete."""
    infos = []
    for p in _ann_paths(root).values():
        try:
            with open(p, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        infos.append(data.get("info") or {} if isinstance(data, dict) else {})
    return infos


def _marker(root: str) -> PidLock:
    return PidLock(os.path.join(root, GENERATING))


def _generation(root: str) -> tuple[bool, LockHolder | None]:
    """``(marked, holder)``: whether ``root`` holds the marker of a generation in progress (or
    killed), and the process it names (None: a marker being written, or garbage)."""
    lock = _marker(root)
    return lock.path.exists(), lock.read()


def _generator_alive(holder: LockHolder | None) -> bool:
    """Whether the marker names another process that runs on this host right now (a marker of a
    process that is gone, of this process, of another host, or garbage: a generation that did not
    finish, redone)."""
    return holder is not None and holder.pid != os.getpid() and holder.running() is True


def _start_generation(root: str, params: dict[str, int]) -> PidLock:
    """Mark ``root`` as being generated by this process; returns the marker (released when the set
    is complete).

    Raises:
        OutputError: ``root`` is not empty (a user's files, or a complete set), or another live
            process is generating into it.
    """
    os.makedirs(root, exist_ok=True)
    marked, holder = _generation(root)
    lock = PidLock(os.path.join(root, GENERATING), **params)
    if marked:
        if holder is not None and _generator_alive(holder):
            raise OutputError(f"shapes: {holder.describe()} is generating the set in {root} right now")
        lock.remove_stale(holder)  # a generation that was killed: its files are ours to rewrite
    else:
        entries = sorted(os.listdir(root))
        if entries:
            infos = _read_set(root)
            what = (f"a shapes set ({_params_text(infos[0])})" if infos is not None
                    else ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else ""))
            raise OutputError(f"shapes: {root} is not empty (it holds {what}); the set is generated only into a "
                              "missing or empty folder: delete it or choose another folder")
    if not lock.acquire():  # exclusive: two processes starting together cannot both generate
        raise OutputError(f"shapes: another process started generating the set in {root}")
    return lock


def make_shapes_dataset(root: str, train: int = 1000, val: int = 200, size: int = 320, seed: int = 0,
                        workers: int | None = None) -> dict[str, str]:
    """Write the shapes set under ``root`` (a missing or empty folder); returns ``{split: ann_file}``.

    A marker file (:data:`GENERATING`) is there until both annotation files are written, so a
    generation that was killed is recognised (and redone) instead of being taken for a user's files.

    Args:
        root: the folder to write (``train/``, ``val/``, ``annotations/instances_{train,val}.json``).
        train: training images.
        val: validation images.
        size: image side in pixels (>= 64).
        seed: generation seed (the same seed gives the same set).
        workers: processes drawing images (None: up to 4).

    Raises:
        ValueError: non-positive counts or a size below 64.
        OutputError: ``root`` not empty (a user's files, or a complete set already); another live
            process generating into ``root``.
    """
    if train < 0 or val < 0 or train + val == 0 or size < 64:
        raise ValueError(f"shapes: need train, val >= 0 (not both 0) and size >= 64; got {train}, {val}, {size}")
    params = dict(train=train, val=val, size=size, seed=seed)
    marker = _start_generation(root, params)
    try:
        workers = workers or min(4, os.cpu_count() or 1)
        os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
        out: dict[str, str] = {}
        for split, n in (("train", train), ("val", val)):
            img_dir = os.path.join(root, split)
            os.makedirs(img_dir, exist_ok=True)
            jobs = [(img_dir, seed, split, i, size) for i in range(n)]
            if workers > 1 and n > 50:
                with mp.get_context("fork" if hasattr(os, "fork") else "spawn").Pool(workers) as pool:
                    results = pool.map(_write_one, jobs, chunksize=16)
            else:
                results = [_write_one(j) for j in jobs]
            out[split] = _write_json(root, split, results, size, params)
    except BaseException:
        marker.detach()  # unfinished: the marker stays, so the next call redoes the set
        raise
    marker.release()  # complete
    return out


def _write_json(root: str, split: str, results: list[list[dict[str, Any]]], size: int, params: dict) -> str:
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    for i, objects in enumerate(results):
        images.append({"id": i + 1, "file_name": f"{i:06d}.jpg", "width": size, "height": size})
        for o in objects:
            x1, y1, x2, y2 = (float(v) for v in o["box"])
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": o["label"] + 1,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": o["area"], "iscrowd": 0})
    data = {
        "info": {"description": "detkit synthetic shapes", "version": FORMAT_VERSION, **params},
        "images": images,
        "annotations": anns,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(SHAPE_CLASSES)],
    }
    path = os.path.join(root, "annotations", f"instances_{split}.json")
    atomic_write(path, "w", lambda f: json.dump(data, f), encoding="utf-8")
    return path


def ensure_shapes_dataset(root: str = "data/shapes", train: int = 1000, val: int = 200, size: int = 320,
                          seed: int = 0, wait_s: float = 3600.0) -> dict[str, str]:
    """The shapes set under ``root``: used as it is when there, generated when ``root`` is missing or empty.

    A complete set is never regenerated: when its recorded settings differ from these, a warning
    says so and the set is used as it is. A set another process is generating right now (DDP
    ranks, two runs) is waited for, up to ``wait_s`` seconds; one whose generation was killed is
    generated again.

    Raises:
        OutputError: ``root`` holds other files (never written over).
        DataError: the wait for another process generating the set ran out.
    """
    params = dict(train=train, val=val, size=size, seed=seed)
    deadline = time.monotonic() + wait_s
    while True:
        marked, holder = _generation(root) if os.path.isdir(root) else (False, None)
        if marked and holder is not None and _generator_alive(holder):
            if time.monotonic() > deadline:
                raise DataError(f"shapes: waited {wait_s:.0f} s for {holder.describe()} generating {root}")
            time.sleep(0.5)
            continue
        infos = _read_set(root) if not marked else None
        if infos is not None:
            _warn_if_different(root, infos, params)
            return _ann_paths(root)
        try:
            return make_shapes_dataset(root, **params)
        except OutputError:
            marked, holder = _generation(root)
            if marked and _generator_alive(holder):
                continue  # another process started generating in between: wait for it
            raise


_WARNED: set[str] = set()


def _warn_if_different(root: str, infos: list[dict[str, Any]], params: dict[str, int]) -> None:
    differs = [i for i in infos
               if not (i.get("version") == FORMAT_VERSION and all(i.get(k) == v for k, v in params.items()))]
    key = os.path.abspath(root)
    if differs and key not in _WARNED:
        _WARNED.add(key)
        logger.warning(f"shapes: using the set in {root} as it is: {_params_text(infos[0])} (asked for "
                       f"{_params_text(params)}); sets are never regenerated over existing files: generate into "
                       "another folder (tools/make_shapes.py) to get those settings")


class ShapesDataset(CocoDataset):
    """The shapes set as a :class:`CocoDataset`, generated on first use.

    Args:
        root: folder of the set (generated there when missing or empty; an existing set is used
            as it is, whatever its settings: see :func:`ensure_shapes_dataset`).
        split: ``train`` or ``val``.
        pipeline: transforms applied to each sample.
        num_train: training images generated (:func:`make_shapes_dataset`'s ``train``).
        num_val: validation images generated (its ``val``).
        size: image side in pixels.
        seed: generation seed.
        filter_empty: drop images without boxes.
        cache_size: decoded images kept per process (0: none).
    """

    def __init__(self, root: str = "data/shapes", split: str = "train",
                 pipeline: Callable | Sequence[Callable] | None = None, num_train: int = 1000,
                 num_val: int = 200, size: int = 320, seed: int = 0, filter_empty: bool = False,
                 cache_size: int = 0) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"ShapesDataset: split {split!r}; accepted: 'train', 'val'")
        paths = ensure_shapes_dataset(root, train=num_train, val=num_val, size=size, seed=seed)
        super().__init__(paths[split], os.path.join(root, split), pipeline=pipeline, filter_empty=filter_empty,
                         cache_size=cache_size)
