"""The sample dict, box clean-up and the dataset base class.

A **sample** is a plain dict of numpy values, what datasets yield and transforms take and return:

=================  =====================================================================
``img``            ``(H, W, 3) uint8`` RGB
``boxes``          ``(N, 4) float32`` xyxy absolute pixels
``labels``         ``(N,) int64`` contiguous class index in ``0..num_classes-1``
``ignore_boxes``   ``(J, 4) float32`` xyxy regions never used as positives (crowd, difficult)
``image_id``       ``int`` (the COCO image id for COCO data)
``ori_size``       ``(h, w)`` ints: the image as labelled (EXIF-oriented, before any resize)
``scale_factor``   ``(sx, sy)`` floats: ``resized = original * s`` (load-time shrink, LetterBox)
``pad``            ``(left, top)`` floats: padding added before the image (LetterBox sets it)
``img_path``       ``str``
``problems``       only when loading found problems in a loader worker: ``(where, reason,
                   index)`` tuples for the main process (see :meth:`DetDataset.merge_reports`)
=================  =====================================================================

:func:`detkit.data.collate` turns a list of samples into the padded batch of
``docs/design.md`` ("Boxes and padded GT batches").

Bad input never crashes training and is never silently lost: every skipped file, line or box is
counted with its reason in a :class:`~detkit.data.problems.ProblemLog` (``dataset.problems``),
summarised once with ``logging`` when the dataset is built. Images failing only when decoded are
counted when read, in the main process too when read by loader workers (``DetDataLoader``
merges what the batches carry).
"""

from __future__ import annotations

import os
import random
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset, get_worker_info

from detkit.data.imageio import ImageReadError, LoadedImage, load_image, read_header, read_image
from detkit.data.problems import ProblemLog, logger
from detkit.errors import DataError

__all__ = [
    "ALL_BACKGROUND",
    "DEFAULT_MAX_SIZE",
    "DetDataset",
    "ImageReadError",
    "ProblemLog",
    "check_images",
    "clean_boxes",
    "empty_sample",
    "read_image",
    "stem_image_ids",
]

# Boxes reaching further than this outside the image (pixels) are reported when clipped;
# smaller overshoots are rounding in the annotation tools and are clipped silently.
CLIP_TOLERANCE = 1.0
# Boxes narrower or shorter than this (pixels, after clipping) are dropped.
MIN_BOX_SIZE = 1e-3
# How many other samples __getitem__ tries when an image cannot be read.
MAX_READ_RETRIES = 20
# Images with a longer side above this are shrunk when read (no training size comes close).
DEFAULT_MAX_SIZE = 4096

SIZE_MISMATCH = "image size differs from the annotated width/height (image skipped)"
EXIF_SIZE_MISMATCH = (
    "annotated width/height match the stored pixels, not the EXIF-oriented image "
    "(image skipped; exif_orientation=False reads stored pixels)"
)
DUPLICATE_BOX = "duplicate box (same class and coordinates; removed)"
ALL_BACKGROUND = "every image is background: no usable box in the whole split (labels missing or empty?)"


def clean_boxes(
    boxes: np.ndarray,
    labels: np.ndarray,
    size: tuple[int, int],
    num_classes: int | None,
    problems: ProblemLog,
    path: str = "",
    tolerance: float = CLIP_TOLERANCE,
    min_size: float = MIN_BOX_SIZE,
    dedup: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Drop unusable boxes (each reason counted) and clip the rest to the image.

    Steps, in order: 1. NaN/inf coordinates dropped; 2. class ids outside ``0..num_classes-1``
    dropped; 3. boxes with ``x2 <= x1`` or ``y2 <= y1`` dropped; 4. the rest clipped to the image,
    those narrower or shorter than ``min_size`` afterwards dropped (reported as outside), those
    clipped by more than ``tolerance`` reported as clipped and kept; 5. with ``dedup``, exact
    duplicates (same class, same coordinates) removed, the first kept.

    Args:
        boxes: ``(N, 4)`` xyxy pixels, any float dtype.
        labels: ``(N,)`` class indices.
        size: ``(h, w)`` of the image.
        num_classes: labels outside ``0..num_classes-1`` are dropped; ``None`` skips the check.
        problems: where the reasons are counted.
        path: file the boxes came from, for the records.
        tolerance: overshoot past the border clipped without being reported (units of ``boxes``).
        min_size: boxes narrower or shorter than this after clipping are dropped.
        dedup: remove exact duplicates.

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
    boxes, labels = clipped[~empty].astype(np.float32), labels[~empty]
    if dedup and len(boxes) > 1:
        rows = np.concatenate([labels[:, None].astype(np.float64), boxes.astype(np.float64)], 1)  # (K, 5)
        _, first = np.unique(rows, axis=0, return_index=True)
        first.sort()
        problems.add(DUPLICATE_BOX, path, len(boxes) - len(first))
        boxes, labels = boxes[first], labels[first]
    return boxes, labels


# Numeric stems become ids only up to this (collate puts ids in an int64 tensor).
MAX_NUMERIC_ID = 2**63 - 1


def stem_image_ids(stems: Sequence[str], where: str = "", strip: str = "") -> list[int]:
    """Image ids of a split's files from their stems (file names without extension), in order.

    Unique by construction: the stems read as integers (after removing the characters in
    ``strip``, e.g. VOC's ``2008_000008`` -> 2008000008) when every stem is then a plain ASCII
    number up to 2**63 - 1 and no two different stems give the same number (so coco128's
    ``000000000009.jpg`` keeps its COCO id 9); else the position in ``stems`` (``1.jpg``,
    ``01.jpg``, ``001.jpg`` get 0, 1, 2, with a warning naming two stems that give the same
    number). Equal stems (``a.jpg`` and ``a.png``, a name listed twice) share their number or
    position's id: the datasets keep the first of them and count the others as duplicates.

    Args:
        stems: ``(N,)`` stems in the dataset's order (sorted file names, or the split list).
        where: the folder or list, for the warning.
        strip: characters removed before reading a stem as a number.
    """
    digits = [s.translate({ord(c): None for c in strip}) for s in stems]
    if not digits or not all(d.isascii() and d.isdigit() and int(d) <= MAX_NUMERIC_ID for d in digits):
        return _positions(stems)
    first: dict[int, str] = {}
    for stem, d in zip(stems, digits):
        other = first.setdefault(int(d), stem)
        if other != stem:
            logger.warning(f"{where or 'dataset'}: file stems {other!r} and {stem!r} are the same number; "
                           "image ids are positions in the file order instead of the stems' numbers")
            return _positions(stems)
    return [int(d) for d in digits]


def _positions(stems: Sequence[str]) -> list[int]:
    """Position of each stem, an equal stem getting its first occurrence's position."""
    first: dict[str, int] = {}
    return [first.setdefault(s, i) for i, s in enumerate(stems)]


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


def _check_size(loaded: LoadedImage, size: tuple[int, int] | None) -> None:
    """Raise when the decoded image's size is not the annotated one (the boxes would not fit)."""
    if size is None or tuple(size) == loaded.ori_size:
        return
    (h, w), (ah, aw) = loaded.ori_size, size
    detail = f"file {h}x{w}, annotated {ah}x{aw} (h x w)"
    swapped = loaded.orientation >= 5 and (w, h) == (ah, aw)
    raise ImageReadError(EXIF_SIZE_MISMATCH if swapped else SIZE_MISMATCH, detail)


class DetDataset(Dataset):
    """Base of the detection datasets: an indexed list of records plus a transform pipeline.

    Subclasses parse their annotations in ``__init__`` into ``self.records`` (one dict per image
    with ``img_path``, ``image_id``, ``boxes``, ``labels``, ``ignore_boxes``, ``size`` — the
    annotated ``(h, w)`` or None — and ``normalized``, True when boxes are in 0..1 of the image)
    and call :meth:`_finish_init`. Images are read lazily; an image that cannot be read is
    counted in ``self.problems``, logged, and another sample is returned in its place.

    With ``cache_size > 0`` each process keeps that many recently decoded images (first in,
    first out; read-only arrays, so a transform writing into its input fails loudly instead of
    corrupting the cache). Mosaic reads four images per sample, so a cache the size of a small
    dataset saves most JPEG decoding (Ultralytics keeps a similar buffer).

    Transforms needing other samples (Mosaic, MixUp) get the dataset through ``bind``: the
    pipeline's ``bind(dataset)`` is called here, and they call :meth:`load_sample`.

    Args:
        pipeline: transforms (a callable, a list, or a Compose).
        seed: seed for picking a replacement when an image cannot be read.
        cache_size: decoded images kept per process (0: none).
        max_size: images with a longer side above this are shrunk when read (JPEGs decoded at
            reduced scale); boxes follow and ``scale_factor`` records it. None: never.
        exif_orientation: apply EXIF orientation; labels refer to the image as shown. False:
            stored pixels, labels refer to them.
    """

    class_names: list[str]

    def __init__(self, pipeline: Callable | Sequence[Callable] | None = None, seed: int = 0,
                 cache_size: int = 0, max_size: int | None = DEFAULT_MAX_SIZE,
                 exif_orientation: bool = True) -> None:
        from detkit.data.transforms import Compose

        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0 (decoded images kept per process); got {cache_size}")
        if max_size is not None and (not isinstance(max_size, int) or max_size < 1):
            raise ValueError(f"max_size must be a positive int (longest side in pixels) or None; got {max_size!r}")
        self.cache_size = int(cache_size)
        self.max_size = max_size
        self.exif_orientation = bool(exif_orientation)
        self._cache: OrderedDict[int, LoadedImage] = OrderedDict()

        if pipeline is None or isinstance(pipeline, Compose):
            self.pipeline = pipeline
        elif callable(pipeline):
            self.pipeline = Compose([pipeline])
        else:
            self.pipeline = Compose(list(pipeline))
        self.problems = ProblemLog(type(self).__name__)
        self.records: list[dict[str, Any]] = []
        self._bad: set[int] = set()
        self._reported: set[tuple[str, str]] = set()  # (where, reason) counted at load time
        self._pending: list[tuple[str, str, int]] = []  # found in this loader worker, not yet shipped
        self._rng = random.Random(seed)
        if self.pipeline is not None and hasattr(self.pipeline, "bind"):
            self.pipeline.bind(self)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _finish_init(self, source: str) -> None:
        """Count a split without any box as a problem, summarise problems once; raise when nothing
        usable was found."""
        if self.records and not any(len(r["boxes"]) for r in self.records):
            self.problems.add(ALL_BACKGROUND, source)
        self.problems.source = source
        self.problems.log_summary()
        if not self.records:
            raise DataError(f"{source}: no usable images found ({self.problems.summary()})")

    def __len__(self) -> int:
        return len(self.records)

    # ------------------------------------------------------------------------------------------
    # reading
    # ------------------------------------------------------------------------------------------

    def decode(self, index: int) -> LoadedImage:
        """Decode record ``index`` from its file (no cache) with this dataset's settings."""
        return load_image(self.records[index]["img_path"], self.max_size, self.exif_orientation)

    def load_image(self, index: int) -> LoadedImage:
        """The decoded image of record ``index`` (from the cache when enabled)."""
        loaded = self._cache.get(index)
        if loaded is None:
            loaded = self.decode(index)
            if self.cache_size:
                loaded.img.setflags(write=False)
                self._cache[index] = loaded
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return loaded

    def read_image(self, index: int) -> np.ndarray:
        """``(H, W, 3) uint8`` RGB of record ``index`` (see :meth:`load_image`)."""
        return self.load_image(index).img

    def _original_boxes(self, rec: dict[str, Any], key: str, size: tuple[int, int]) -> np.ndarray:
        """``rec[key]`` in pixels of the image as labelled, of ``size (h, w)``."""
        boxes = rec[key]
        if rec.get("normalized"):
            h, w = size
            return boxes * np.array([w, h, w, h], np.float32)
        return boxes

    def _read(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        loaded = self.load_image(index)
        _check_size(loaded, rec.get("size"))
        sample = empty_sample(loaded.img, rec["image_id"], rec["img_path"])
        sample["ori_size"], sample["scale_factor"] = loaded.ori_size, loaded.scale
        sx, sy = loaded.scale
        scale = np.array([sx, sy, sx, sy], np.float32)
        boxes = self._original_boxes(rec, "boxes", loaded.ori_size)
        labels = rec["labels"].copy()
        ignore = self._original_boxes(rec, "ignore_boxes", loaded.ori_size)
        if rec.get("size") is None and not rec.get("normalized"):  # size unknown when parsed: clip now
            quiet = ProblemLog()
            boxes, labels = clean_boxes(boxes, labels, loaded.ori_size, None, quiet, dedup=False)
            ignore, _ = clean_boxes(ignore, np.zeros(len(ignore)), loaded.ori_size, None, quiet, dedup=False)
        sample["boxes"] = (boxes * scale).astype(np.float32)
        sample["labels"] = labels
        sample["ignore_boxes"] = (ignore * scale).astype(np.float32)
        return sample

    def load_sample(self, index: int) -> dict[str, Any]:
        """The untransformed sample ``index``; a different one when its image cannot be read."""
        for _ in range(MAX_READ_RETRIES):
            if index not in self._bad:
                try:
                    return self._read(index)
                except ImageReadError as e:
                    self._bad.add(index)
                    where = self.records[index]["img_path"] + (f" ({e.detail})" if e.detail else "")
                    if self.report(e.reason, where, index):
                        logger.warning("skipping image %s: %s (another sample is used)", where, e.reason)
            index = self._rng.randrange(len(self.records))
        raise DataError(
            f"{self.problems.source}: {MAX_READ_RETRIES} images in a row could not be read; "
            f"{self.problems.summary()}"
        )

    def random_index(self) -> int:
        """A random index (for transforms that mix in other samples)."""
        return random.randrange(len(self.records))

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.load_sample(index)
        if self.pipeline is not None:
            sample = self.pipeline(sample)
        if self._pending:  # found in this loader worker: travels to the main process with the batch
            sample["problems"], self._pending = self._pending, []
        return sample

    # ------------------------------------------------------------------------------------------
    # problems found while reading
    # ------------------------------------------------------------------------------------------

    def report(self, reason: str, where: str, index: int = -1) -> bool:
        """Count a problem found while reading (once per ``(where, reason)``); False when known.

        Inside a loader worker it is also queued to travel with the next sample to the main
        process, whose dataset counts it through :meth:`merge_reports`.
        """
        if (where, reason) in self._reported:
            return False
        self._reported.add((where, reason))
        self.problems.add(reason, where)
        if get_worker_info() is not None:
            self._pending.append((where, reason, index))
        return True

    def merge_reports(self, reports: Iterable[Sequence[Any]]) -> int:
        """Count problems that loader workers found (``batch["problems"]``); returns how many were new.

        Each ``(where, reason[, index])`` is counted once however many workers or epochs report
        it; a reported index is skipped by workers started later.
        """
        new = 0
        for item in reports:
            where, reason = str(item[0]), str(item[1])
            index = int(item[2]) if len(item) > 2 else -1
            if 0 <= index < len(self.records):
                self._bad.add(index)
            if (where, reason) not in self._reported:
                self._reported.add((where, reason))
                self.problems.add(reason, where)
                new += 1
        return new

    # ------------------------------------------------------------------------------------------
    # ground truth without reading pixels
    # ------------------------------------------------------------------------------------------

    def image_size(self, index: int) -> tuple[int, int]:
        """``(h, w)`` of image ``index`` as labelled: from the annotations, else the file header."""
        rec = self.records[index]
        size = rec.get("size") or rec.get("header_size")
        if size:
            return tuple(size)
        with open(rec["img_path"], "rb") as f:
            header = read_header(f.read())
        if header is None:
            size = self.decode(index).ori_size
        else:
            size = header.size(self.exif_orientation)
        rec["header_size"] = size
        return size

    def pixel_boxes(self, index: int, key: str = "boxes") -> np.ndarray:
        """``(N, 4)`` xyxy pixel boxes of record ``index`` (``key``: boxes or ignore_boxes)."""
        rec = self.records[index]
        return self._original_boxes(rec, key, self.image_size(index)) if rec.get("normalized") else rec[key]

    def coco_dict(self) -> dict[str, Any]:
        """The ground truth as a COCO instances dict (for the evaluator); ignore regions are crowd.

        Category ids are ``self.cat_ids`` (``0..C-1`` for formats without ids of their own).
        """
        cat_ids = list(getattr(self, "cat_ids", range(self.num_classes)))
        images: list[dict[str, Any]] = []
        anns: list[dict[str, Any]] = []
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
    """Decode every image of ``dataset`` once, counting the unusable ones and dropping their records.

    Unusable: undecodable, too large, or of another size than annotated. Called before any
    loader exists (``check_images=True`` of the datasets, ``tools/check_dataset.py``).
    """
    keep = []
    for index, rec in enumerate(dataset.records):
        try:
            _check_size(dataset.decode(index), rec.get("size"))
        except ImageReadError as e:
            dataset.problems.add(e.reason, rec["img_path"] + (f" ({e.detail})" if e.detail else ""))
            continue
        keep.append(rec)
    dataset.records = keep
    dataset._bad.clear()
    dataset._cache.clear()
