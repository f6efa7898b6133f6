"""The sample dict, problem counting, image reading, box clean-up and the dataset base class.

A **sample** is a plain dict of numpy values, what datasets yield and transforms take and return:

=================  =====================================================================
``img``            ``(H, W, 3) uint8`` RGB
``boxes``          ``(N, 4) float32`` xyxy absolute pixels
``labels``         ``(N,) int64`` contiguous class index in ``0..num_classes-1``
``ignore_boxes``   ``(J, 4) float32`` xyxy regions never used as positives (crowd, difficult)
``image_id``       ``int`` (the COCO image id for COCO data)
``ori_size``       ``(h, w)`` ints: the image as read from disk
``scale_factor``   ``(sx, sy)`` floats: ``resized = original * s`` (LetterBox sets it)
``pad``            ``(left, top)`` floats: padding added before the image (LetterBox sets it)
``img_path``       ``str``
=================  =====================================================================

:func:`detkit.data.collate` turns a list of samples into the padded batch of
``CONTRIBUTING-INTERFACES.md``.

Bad input never crashes training and is never silently lost: every skipped file, line or box is
counted with its reason in a :class:`ProblemLog` (``dataset.problems``), summarised once with
``logging`` when the dataset is built.
"""

from __future__ import annotations

import logging
import os
import random
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
from torch.utils.data import Dataset

__all__ = [
    "DetDataset",
    "ImageReadError",
    "ProblemLog",
    "clean_boxes",
    "empty_sample",
    "read_image",
]

logger = logging.getLogger("detkit.data")

# Boxes reaching further than this outside the image (pixels) are reported when clipped;
# smaller overshoots are rounding in the annotation tools and are clipped silently.
CLIP_TOLERANCE = 1.0
# Boxes narrower or shorter than this (pixels, after clipping) are dropped.
MIN_BOX_SIZE = 1e-3
# How many other samples __getitem__ tries when an image cannot be read.
MAX_READ_RETRIES = 20
# How many problems a ProblemLog keeps with their file path (the counts are always complete).
MAX_RECORDS = 100_000

# cv2 applies EXIF orientation by default; annotations are in the stored pixel orientation.
_IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


class ImageReadError(OSError):
    """An image file that is missing, empty, truncated or not decodable."""


class ProblemLog:
    """Counts skipped inputs by reason and keeps ``(path, reason)`` records for reports.

    Example::

        log = ProblemLog("labels/a.txt")
        log.add("label line has 4 fields, expected 5", "labels/a.txt:3")
        log.summary()  # '1 problem(s) in labels/a.txt: 1 x label line has 4 fields, expected 5'
    """

    def __init__(self, source: str = "") -> None:
        self.source = source
        self.counts: Counter[str] = Counter()
        self.records: list[tuple[str, str]] = []

    def add(self, reason: str, path: str = "", n: int = 1) -> None:
        """Count ``n`` occurrences of ``reason`` at ``path`` (a file, ``file:line`` or ``ann id``)."""
        if n <= 0:
            return
        self.counts[reason] += n
        if len(self.records) < MAX_RECORDS:
            self.records.append((path, reason if n == 1 else f"{reason} (x{n})"))

    def extend(self, other: ProblemLog) -> None:
        for reason, n in other.counts.items():
            self.counts[reason] += n
        self.records.extend(other.records[: max(0, MAX_RECORDS - len(self.records))])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __bool__(self) -> bool:
        return self.total > 0

    def __len__(self) -> int:
        return self.total

    def summary(self) -> str:
        """One line: total and count per reason, most frequent first."""
        where = f" in {self.source}" if self.source else ""
        if not self.counts:
            return f"no problems{where}"
        parts = "; ".join(f"{n} x {reason}" for reason, n in self.counts.most_common())
        return f"{self.total} problem(s){where}: {parts}"

    def log_summary(self) -> None:
        """Log :meth:`summary` once as a warning (nothing when clean)."""
        if self.counts:
            logger.warning("%s", self.summary())


def _is_truncated_jpeg(buf: np.ndarray) -> bool:
    """A JPEG whose end-of-image marker (FF D9) is missing from its last kilobyte."""
    if buf.size < 4 or buf[0] != 0xFF or buf[1] != 0xD8:
        return False  # not a JPEG
    tail = buf[-1024:].tobytes()
    return b"\xff\xd9" not in tail


def read_image(path: str) -> np.ndarray:
    """Read an image file as ``(H, W, 3) uint8`` RGB (grayscale and RGBA become RGB).

    Raises:
        ImageReadError: missing, zero-byte, truncated JPEG or undecodable file.
    """
    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise ImageReadError(f"cannot open image: {e.strerror or e}") from e
    if buf.size == 0:
        raise ImageReadError("zero-byte image file")
    if _is_truncated_jpeg(buf):
        raise ImageReadError("truncated JPEG (no end-of-image marker)")
    img = cv2.imdecode(buf, _IMREAD_FLAGS)
    if img is None or img.size == 0:
        raise ImageReadError("image cannot be decoded")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def clean_boxes(
    boxes: np.ndarray,
    labels: np.ndarray,
    size: tuple[int, int],
    num_classes: int | None,
    problems: ProblemLog,
    path: str = "",
    tolerance: float = CLIP_TOLERANCE,
    min_size: float = MIN_BOX_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Drop unusable boxes (each reason counted) and clip the rest to the image.

    Args:
        boxes: ``(N, 4)`` xyxy pixels, any float dtype.
        labels: ``(N,)`` class indices.
        size: ``(h, w)`` of the image.
        num_classes: labels outside ``0..num_classes-1`` are dropped; ``None`` skips the check.
        problems: where the reasons are counted.
        path: file the boxes came from, for the records.
        tolerance: overshoot past the border clipped without being reported (units of ``boxes``).
        min_size: boxes narrower or shorter than this after clipping are dropped.

    Returns:
        ``boxes (K, 4) float32`` clipped to the image, ``labels (K,) int64``.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    h, w = size
    keep = np.isfinite(boxes).all(1)
    problems.add("box with NaN/inf coordinates", path, int((~keep).sum()))
    if num_classes is not None:
        bad = keep & ((labels < 0) | (labels >= num_classes))
        problems.add(f"class id out of range 0..{num_classes - 1}", path, int(bad.sum()))
        keep &= ~bad
    bad = keep & ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
    problems.add("box with non-positive width or height", path, int(bad.sum()))
    keep &= ~bad
    boxes, labels = boxes[keep], labels[keep]
    limit = np.array([w, h, w, h], dtype=np.float64)
    clipped = np.clip(boxes, 0.0, limit)
    overshoot = np.abs(clipped - boxes).max(1) if len(boxes) else np.zeros(0)
    empty = ((clipped[:, 2] - clipped[:, 0]) < min_size) | ((clipped[:, 3] - clipped[:, 1]) < min_size)
    problems.add("box outside the image (empty after clipping)", path, int(empty.sum()))
    problems.add("box partly outside the image (clipped)", path, int(((overshoot > tolerance) & ~empty).sum()))
    return clipped[~empty].astype(np.float32), labels[~empty]


def empty_sample(img: np.ndarray, image_id: int, img_path: str = "") -> dict[str, Any]:
    """A sample with no boxes for ``img (H, W, 3) uint8``."""
    h, w = img.shape[:2]
    return {
        "img": img,
        "boxes": np.zeros((0, 4), np.float32),
        "labels": np.zeros((0,), np.int64),
        "ignore_boxes": np.zeros((0, 4), np.float32),
        "image_id": int(image_id),
        "ori_size": (h, w),
        "scale_factor": (1.0, 1.0),
        "pad": (0.0, 0.0),
        "img_path": img_path,
    }


class DetDataset(Dataset):
    """Base of the detection datasets: an indexed list of records plus a transform pipeline.

    Subclasses parse their annotations in ``__init__`` into ``self.records`` (one dict per image
    with ``img_path``, ``image_id``, ``boxes``, ``labels``, ``ignore_boxes``) and call
    :meth:`_finish_init`. Images are read lazily; an image that cannot be read is counted in
    ``self.problems``, logged, and another sample is returned in its place.

    With ``cache_size > 0`` each process keeps that many recently decoded images (first in,
    first out; read-only arrays, so a transform writing into its input fails loudly instead of
    corrupting the cache). Mosaic reads four images per sample, so a cache the size of a small
    dataset saves most JPEG decoding (Ultralytics keeps a similar buffer).

    Transforms needing other samples (Mosaic, MixUp) get the dataset through ``bind``: the
    pipeline's ``bind(dataset)`` is called here, and they call :meth:`load_sample`.
    """

    class_names: list[str]

    def __init__(self, pipeline: Callable | Sequence[Callable] | None = None, seed: int = 0,
                 cache_size: int = 0) -> None:
        from detkit.data.transforms import Compose

        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0 (decoded images kept per process); got {cache_size}")
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

        if pipeline is None or isinstance(pipeline, Compose):
            self.pipeline = pipeline
        elif callable(pipeline):
            self.pipeline = Compose([pipeline])
        else:
            self.pipeline = Compose(list(pipeline))
        self.problems = ProblemLog(type(self).__name__)
        self.records: list[dict[str, Any]] = []
        self._bad: set[int] = set()
        self._rng = random.Random(seed)
        if self.pipeline is not None and hasattr(self.pipeline, "bind"):
            self.pipeline.bind(self)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _finish_init(self, source: str) -> None:
        """Summarise problems once; raise when nothing usable was found."""
        self.problems.source = source
        self.problems.log_summary()
        if not self.records:
            raise ValueError(f"{source}: no usable images found ({self.problems.summary()})")

    def __len__(self) -> int:
        return len(self.records)

    def read_image(self, index: int) -> np.ndarray:
        """The decoded image of record ``index`` (from the cache when enabled)."""
        img = self._cache.get(index)
        if img is None:
            img = read_image(self.records[index]["img_path"])
            if self.cache_size:
                img.setflags(write=False)
                self._cache[index] = img
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return img

    def _read(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        img = self.read_image(index)
        sample = empty_sample(img, rec["image_id"], rec["img_path"])
        sample["boxes"] = rec["boxes"].copy()
        sample["labels"] = rec["labels"].copy()
        sample["ignore_boxes"] = rec["ignore_boxes"].copy()
        if rec.get("size") is None:  # size unknown when parsed: clip to the image now
            h, w = img.shape[:2]
            quiet = ProblemLog()
            sample["boxes"], sample["labels"] = clean_boxes(sample["boxes"], sample["labels"], (h, w), None, quiet)
            sample["ignore_boxes"], _ = clean_boxes(
                sample["ignore_boxes"], np.zeros(len(sample["ignore_boxes"])), (h, w), None, quiet
            )
        return sample

    def load_sample(self, index: int) -> dict[str, Any]:
        """The untransformed sample ``index``; a different one when its image cannot be read."""
        for _ in range(MAX_READ_RETRIES):
            if index not in self._bad:
                try:
                    return self._read(index)
                except ImageReadError as e:
                    path = self.records[index]["img_path"]
                    self._bad.add(index)
                    self.problems.add(str(e), path)
                    logger.warning("skipping unreadable image %s: %s (another sample is used)", path, e)
            index = self._rng.randrange(len(self.records))
        raise RuntimeError(
            f"{self.problems.source}: {MAX_READ_RETRIES} images in a row could not be read; "
            f"{self.problems.summary()}"
        )

    def random_index(self) -> int:
        """A random index (for transforms that mix in other samples)."""
        return random.randrange(len(self.records))

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.load_sample(index)
        return self.pipeline(sample) if self.pipeline is not None else sample

    def image_size(self, index: int) -> tuple[int, int]:
        """``(h, w)`` of image ``index`` from the annotations, else from the file header."""
        rec = self.records[index]
        if rec.get("size"):
            return tuple(rec["size"])
        from PIL import Image

        with Image.open(rec["img_path"]) as im:  # reads the header only
            w, h = im.size
        rec["size"] = (h, w)
        return h, w

    def pixel_boxes(self, index: int, key: str = "boxes") -> np.ndarray:
        """``(N, 4)`` xyxy pixel boxes of record ``index`` (``key``: boxes or ignore_boxes)."""
        return self.records[index][key]

    def coco_dict(self) -> dict[str, Any]:
        """The ground truth as a COCO instances dict (for the evaluator); ignore regions are crowd.

        Category ids are ``self.cat_ids`` (``0..C-1`` for formats without ids of their own).
        """
        cat_ids = list(getattr(self, "cat_ids", range(self.num_classes)))
        images, anns = [], []
        for i, rec in enumerate(self.records):
            h, w = self.image_size(i)
            images.append({"id": int(rec["image_id"]), "file_name": os.path.basename(rec["img_path"]),
                           "width": int(w), "height": int(h)})
            for key, crowd in (("boxes", 0), ("ignore_boxes", 1)):
                boxes = self.pixel_boxes(i, key)
                labels = rec["labels"] if key == "boxes" else np.zeros(len(boxes), np.int64)
                for (x1, y1, x2, y2), lab in zip(boxes.tolist(), labels.tolist()):
                    anns.append({"id": len(anns) + 1, "image_id": int(rec["image_id"]),
                                 "category_id": int(cat_ids[lab]), "bbox": [x1, y1, x2 - x1, y2 - y1],
                                 "area": (x2 - x1) * (y2 - y1), "iscrowd": crowd})
        cats = [{"id": int(c), "name": n} for c, n in zip(cat_ids, self.class_names)]
        return {"images": images, "annotations": anns, "categories": cats}

    def image_info(self, index: int) -> dict[str, Any]:
        """``image_id`` and ``img_path`` of record ``index`` without reading the image."""
        rec = self.records[index]
        return {"image_id": rec["image_id"], "img_path": rec["img_path"]}


def check_images(dataset: DetDataset) -> None:
    """Decode every image of ``dataset`` once, counting unreadable ones in ``dataset.problems``."""
    for index, rec in enumerate(dataset.records):
        try:
            img = read_image(rec["img_path"])
        except ImageReadError as e:
            dataset.problems.add(str(e), rec["img_path"])
            dataset._bad.add(index)
            continue
        size = rec.get("size")
        if size is not None and tuple(size) != img.shape[:2]:
            dataset.problems.add(
                f"image is {img.shape[0]}x{img.shape[1]} (h x w) but annotated as {size[0]}x{size[1]}",
                rec["img_path"],
            )
