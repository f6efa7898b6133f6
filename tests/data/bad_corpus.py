"""A corpus of bad input, written at test time: one YOLO-txt layout and one COCO json over the
same images, with the problem counts each reader must report (the specification the tests check).

    root/images/train/*.jpg|png     root/labels/train/*.txt     root/names.txt (80 COCO names)
    root/annotations/instances.json (COCO ids 1..80 = label + 1)

Images come from the synthetic shapes generator and, when ``../shared/data/coco128`` is there,
from coco128 (a real photo truncated, a real photo stored rotated with an EXIF orientation tag).
Everything is small except one 8000 x 6000 flat-colour JPEG (about 0.3 s to write).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from detkit.data import COCO_CLASSES
from detkit.data.shapes import make_shape_image

__all__ = ["BadCorpus", "Case", "build_bad_corpus", "write_unusable_coco_jsons"]

EXIF_ORIENTATION = 0x0112
HUGE_W, HUGE_H = 8000, 6000
MANY = 500  # GT boxes in one image

# The reasons the readers must give (literal: this file is the specification).
TRUNCATED_JPEG = "truncated JPEG (no end-of-image marker)"
ZERO_BYTE = "zero-byte image file"
NOT_IMAGE = "not an image file (unrecognised format)"
UNDECODABLE = "image cannot be decoded"
MISSING = "missing image file"
SKIPPED_ROW = "label row of a skipped image"
SKIPPED_ANN = "annotation of a skipped image"
ORPHAN = "label file has no image"
DUP_STEM = "duplicate image id: another image has the same file stem (first kept)"
FIELDS = "label line has {} fields, expected 5 (class cx cy w h) or a polygon"
NOT_NUMBER = "label line has a field that is not a number"
NOT_INTEGER = "class id is not an integer"
OUT_OF_RANGE = "class id out of range 0..79"
NAN = "box with NaN/inf coordinates"
NON_POSITIVE = "box with non-positive width or height"
OUTSIDE = "box outside the image (empty after clipping)"
CLIPPED = "box partly outside the image (clipped)"
DUPLICATE = "duplicate box (same class and coordinates; removed)"
SIZE_MISMATCH = "image size differs from the annotated width/height (image skipped)"
EXIF_MISMATCH = (
    "annotated width/height match the stored pixels, not the EXIF-oriented image "
    "(image skipped; exif_orientation=False reads stored pixels)"
)


@dataclass
class Case:
    """One usable image: its file, size as shown ``(w, h)`` and boxes ``[(cls, x1, y1, x2, y2)]`` in
    pixels of the image as shown."""

    name: str
    size: tuple[int, int]
    boxes: list[tuple[int, float, float, float, float]] = field(default_factory=list)


@dataclass
class BadCorpus:
    """Where the corpus is and what the readers must report.

    ``*_index``: problems counted when the dataset is built; ``*_load``: problems only decoding
    finds (reported when the image is read, or by ``check_images``). ``cases``: the usable images
    by file name (YOLO side), with their boxes as they must come out.
    """

    root: Path
    img_dir: Path
    label_dir: Path
    names: Path
    ann_file: Path
    cases: dict[str, Case]
    yolo_index: Counter = field(default_factory=Counter)
    yolo_load: Counter = field(default_factory=Counter)
    coco_index: Counter = field(default_factory=Counter)
    coco_load: Counter = field(default_factory=Counter)
    yolo_usable: int = 0  # records after indexing (loading skips yolo_load images)
    coco_usable: int = 0
    with_coco128: bool = False
    coco_entries: list[dict] = field(default_factory=list)


def _yolo_row(cls: int, x1: float, y1: float, x2: float, y2: float, w: int, h: int) -> str:
    return f"{cls} {(x1 + x2) / 2 / w:.8f} {(y1 + y2) / 2 / h:.8f} {(x2 - x1) / w:.8f} {(y2 - y1) / h:.8f}"


def _write_jpeg(path: Path, rgb: np.ndarray, quality: int = 95) -> None:
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])


def _shapes(seed: int, size: int = 96) -> tuple[np.ndarray, list[tuple[int, float, float, float, float]]]:
    img, objects = make_shape_image(seed, size)
    return img, [(int(o["label"]), *(float(v) for v in o["box"])) for o in objects]


def _corrupt_png(path: Path) -> None:
    """A PNG with a valid signature, header and end chunk whose compressed pixels are damaged."""
    ok, buf = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    data = bytearray(buf.tobytes())
    start = data.find(b"IDAT") + 8
    for k in range(start, start + 32):
        data[k] ^= 0x5A
    path.write_bytes(bytes(data))


def _exif_jpeg(path: Path, shown: np.ndarray, orientation: int = 6) -> None:
    """Store ``shown (H, W, 3) RGB`` rotated so that EXIF ``orientation`` 6 (rotate 90 clockwise to
    show) gives it back."""
    assert orientation == 6
    stored = cv2.rotate(shown, cv2.ROTATE_90_COUNTERCLOCKWISE)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    Image.fromarray(stored).save(path, quality=95, exif=exif)


class _Builder:
    def __init__(self, root: Path) -> None:
        self.c = BadCorpus(root, root / "images" / "train", root / "labels" / "train", root / "names.txt",
                           root / "annotations" / "instances.json", {})
        for d in (self.c.img_dir, self.c.label_dir, self.c.ann_file.parent):
            d.mkdir(parents=True, exist_ok=True)
        self.c.names.write_text("\n".join(COCO_CLASSES) + "\n")
        self.images: list[dict] = []
        self.anns: list[dict] = []

    # -- helpers ---------------------------------------------------------------------------------

    def label(self, stem: str, rows: list[str]) -> None:
        (self.c.label_dir / f"{stem}.txt").write_text("\n".join(rows) + "\n")

    def image_entry(self, name: str, w: int | None, h: int | None, image_id: int | None = None, **extra) -> int:
        image_id = len(self.images) + 1 if image_id is None else image_id
        entry = {"id": image_id, "file_name": name, **extra}
        if w is not None:
            entry.update(width=w, height=h)
        self.images.append(entry)
        return image_id

    def ann(self, image_id: int, bbox, category_id=1, **extra) -> None:
        self.anns.append({"id": len(self.anns) + 1, "image_id": image_id, "category_id": category_id,
                          "bbox": bbox, "iscrowd": 0, "area": 1.0, **extra})

    def usable(self, case: Case, coco: bool = True) -> int | None:
        """Register a good image: YOLO labels, and a COCO entry with its boxes."""
        w, h = case.size
        stem = Path(case.name).stem
        if case.boxes:
            self.label(stem, [_yolo_row(*b, w, h) for b in case.boxes])
        self.c.cases[case.name] = case
        self.c.yolo_usable += 1
        if not coco:
            return None
        image_id = self.image_entry(case.name, w, h)
        for cls, x1, y1, x2, y2 in case.boxes:
            self.ann(image_id, [x1, y1, x2 - x1, y2 - y1], cls + 1)
        self.c.coco_usable += 1
        return image_id

    # -- the cases -------------------------------------------------------------------------------

    def good(self, n: int = 4) -> None:
        for i in range(n):
            img, boxes = _shapes(10 + i)
            _write_jpeg(self.c.img_dir / f"good_{i}.jpg", img)
            self.usable(Case(f"good_{i}.jpg", (96, 96), boxes))

    def unreadable(self) -> None:
        c = self.c
        img, boxes = _shapes(20)
        _write_jpeg(c.img_dir / "truncated.jpg", img)
        data = (c.img_dir / "truncated.jpg").read_bytes()
        (c.img_dir / "truncated.jpg").write_bytes(data[: len(data) // 2])
        self.label("truncated", [_yolo_row(*b, 96, 96) for b in boxes[:2]])
        (c.img_dir / "zero_byte.jpg").write_bytes(b"")
        (c.img_dir / "not_image.jpg").write_text("this is a text file, not a picture\n")
        _corrupt_png(c.img_dir / "corrupt.png")
        self.label("corrupt", ["0 0.5 0.5 0.5 0.5"])
        (c.label_dir / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
        c.yolo_index.update({TRUNCATED_JPEG: 1, SKIPPED_ROW: 2, ZERO_BYTE: 1, NOT_IMAGE: 1, ORPHAN: 1})
        c.yolo_load.update({UNDECODABLE: 1})
        c.yolo_usable += 1  # corrupt.png passes the cheap check; decoding skips it
        for name, n_anns in (("truncated.jpg", 2), ("zero_byte.jpg", 1), ("not_image.jpg", 0),
                             ("missing.jpg", 2)):
            image_id = self.image_entry(name, 96, 96)
            for _ in range(n_anns):
                self.ann(image_id, [10, 10, 20, 20])
        c.coco_index.update({TRUNCATED_JPEG: 1, ZERO_BYTE: 1, NOT_IMAGE: 1, MISSING: 1, SKIPPED_ANN: 5})
        image_id = self.image_entry("corrupt.png", 32, 32)
        self.ann(image_id, [8, 8, 16, 16])
        c.coco_load.update({UNDECODABLE: 1})
        c.coco_usable += 1

    def pixel_formats(self) -> None:
        c = self.c
        rgba = np.zeros((48, 64, 4), np.uint8)  # BGRA for cv2: pure red under the alpha
        rgba[..., 2] = 255
        rgba[:, 32:, 3] = 255  # right half opaque
        rgba[:, 30:32, 3] = 128  # a half-transparent seam
        assert cv2.imwrite(str(c.img_dir / "alpha.png"), rgba)
        self.usable(Case("alpha.png", (64, 48), [(0, 32, 0, 64, 48)]))

        gray = np.tile(np.arange(64, dtype=np.uint8)[None, :] * 4, (48, 1))  # (48, 64) 0..252
        assert cv2.imwrite(str(c.img_dir / "gray.png"), gray)
        self.usable(Case("gray.png", (64, 48), [(2, 8, 8, 40, 40)]))

        deep = np.zeros((32, 48, 3), np.uint16)  # BGR, 16 bit
        deep[..., 2] = 65535  # R -> 255
        deep[..., 1] = 257 * 128  # G -> 128
        deep[:, :24, 0] = 257 * 7 + 128  # B -> 7 (7.498)
        deep[:, 24:, 0] = 257 * 7 + 129  # B -> 8 (7.502)
        assert cv2.imwrite(str(c.img_dir / "deep16.png"), deep)
        self.usable(Case("deep16.png", (48, 32), [(3, 4, 4, 20, 28)]))

        tiny = np.array([[[30, 20, 10]]], np.uint8)  # BGR of RGB (10, 20, 30)
        assert cv2.imwrite(str(c.img_dir / "tiny.png"), tiny)
        self.usable(Case("tiny.png", (1, 1), [(0, 0, 0, 1, 1)]))

        huge = np.full((HUGE_H, HUGE_W, 3), (40, 90, 160), np.uint8)
        _write_jpeg(c.img_dir / "huge.jpg", huge, quality=50)
        self.usable(Case("huge.jpg", (HUGE_W, HUGE_H), [(1, 2000, 1500, 6000, 4500)]))

    def orientation(self) -> None:
        c = self.c
        shown = np.full((64, 96, 3), 128, np.uint8)  # as a viewer shows it: 96 wide, 64 tall
        shown[8:30, 10:40] = (255, 0, 0)  # red, class 0
        shown[36:60, 60:90] = (0, 0, 255)  # blue, class 1
        _exif_jpeg(c.img_dir / "exif_rot.jpg", shown)
        image_id = self.usable(Case("exif_rot.jpg", (96, 64), [(0, 10, 8, 40, 30), (1, 60, 36, 90, 60)]))
        # the same file annotated with its stored (unrotated) size: refused when read
        self.image_entry("exif_rot.jpg", 64, 96, image_id=image_id + 1000)
        self.ann(image_id + 1000, [10, 10, 20, 20])
        c.coco_load.update({EXIF_MISMATCH: 1})
        c.coco_usable += 1

    def many_boxes(self) -> None:
        img = np.full((200, 256, 3), 60, np.uint8)
        boxes = []
        for k in range(MANY):
            x, y = 10 * (k % 25) + 2, 10 * (k // 25) + 2
            img[y:y + 7, x:x + 7] = (200, 200, 40)
            boxes.append((k % 5, x, y, x + 7, y + 7))
        _write_jpeg(self.c.img_dir / "many.jpg", img)
        self.usable(Case("many.jpg", (256, 200), boxes))

    def duplicate_stem(self) -> None:
        img, boxes = _shapes(30)
        _write_jpeg(self.c.img_dir / "dup.jpg", img)
        assert cv2.imwrite(str(self.c.img_dir / "dup.png"), img)
        self.usable(Case("dup.jpg", (96, 96), boxes), coco=False)
        self.c.yolo_index.update({DUP_STEM: 1})

    def garbage_labels(self) -> None:
        """YOLO rows and COCO annotations of every bad kind on one good image."""
        c = self.c
        img, boxes = _shapes(40)
        _write_jpeg(c.img_dir / "garbage.jpg", img)
        good = [_yolo_row(*b, 96, 96) for b in boxes]
        rows = good + [
            "0 0.5 0.5 0.2",  # 4 fields
            "hello world",  # 2 fields
            "\x01\x02binary\x7fjunk",  # 1 field
            "x 0.5 0.5 0.2 0.2",  # not a number
            "0 0.5 0.5 0.2 0.2 0.3",  # 6 fields
            "80 0.5 0.5 0.1 0.1", "-1 0.5 0.5 0.1 0.1", "999 0.5 0.5 0.1 0.1",  # class out of range
            "1.5 0.5 0.5 0.1 0.1",  # class not an integer
            "0 nan 0.5 0.1 0.1", "0 0.5 inf 0.1 0.1", "0 0.5 0.5 -inf 0.1",  # NaN / inf
            "0 0.5 0.5 -0.2 0.1", "0 0.5 0.5 0 0.1", "0 0.5 0.5 0.1 0",  # negative / zero size
            "0 1.5 1.5 0.2 0.2", "0 -0.5 0.5 0.2 0.2",  # fully outside
            "1 0.95 0.5 0.3 0.2",  # partly outside: clipped to x 0.8..1.0, kept
            good[0], good[0],  # duplicates of the first row
        ]
        self.label("garbage", rows)
        kept = list(boxes) + [(1, 0.8 * 96, 0.4 * 96, 96.0, 0.6 * 96)]
        c.cases["garbage.jpg"] = Case("garbage.jpg", (96, 96), kept)
        c.yolo_usable += 1
        c.yolo_index.update({
            FIELDS.format(4): 1, FIELDS.format(2): 1, FIELDS.format(1): 1, FIELDS.format(6): 1,
            NOT_NUMBER: 1, OUT_OF_RANGE: 3, NOT_INTEGER: 1, NAN: 3, NON_POSITIVE: 3, OUTSIDE: 2,
            CLIPPED: 1, DUPLICATE: 2,
        })
        image_id = self.image_entry("garbage.jpg", 96, 96)
        for cls, x1, y1, x2, y2 in boxes:
            self.ann(image_id, [x1, y1, x2 - x1, y2 - y1], cls + 1)
        cls, x1, y1, x2, y2 = boxes[0]
        bad = [
            dict(bbox=[float("nan"), 0, 5, 5]),
            dict(bbox=[5, 5, 0, 4]), dict(bbox=[5, 5, -3, 4]),  # zero / negative width
            dict(bbox=[200, 200, 10, 10]),  # fully outside
            dict(bbox=[90, 10, 20, 20]),  # partly outside: clipped
            dict(bbox=[x1, y1, x2 - x1, y2 - y1], category_id=cls + 1),  # duplicate
            dict(bbox="oops"), dict(bbox=None),  # not 4 numbers / missing
            dict(category_id=999), dict(category_id=None),  # unknown / missing category
        ]
        for kw in bad:
            kw.setdefault("bbox", [10, 10, 10, 10])
            self.ann(image_id, **{"category_id": 1, **kw})
        del self.anns[-3]["bbox"]  # the bbox=None one: no bbox at all
        c.coco_index.update({NAN: 1, NON_POSITIVE: 2, OUTSIDE: 1, CLIPPED: 1, DUPLICATE: 1,
                             "annotation bbox is not 4 numbers": 2, "annotation with an unknown category_id": 2})
        c.coco_usable += 1

    def coco_entries(self) -> None:
        """Image, category and annotation entries with missing fields or unknown ids."""
        c = self.c
        self.images.append({"id": 900, "width": 10, "height": 10})  # no file_name
        self.images.append({"file_name": "good_0.jpg", "width": 96, "height": 96})  # no id
        self.images.append({"id": 1, "file_name": "good_1.jpg", "width": 96, "height": 96})  # id 1 again
        self.ann(900, [1, 1, 4, 4])  # its image entry was dropped
        self.ann(12345, [1, 1, 4, 4])  # no such image
        self.image_entry("good_3.jpg", None, None, image_id=960)  # no width/height: read from the file
        self.image_entry("good_2.jpg", 100, 100, image_id=950)  # wrong size: refused when read
        self.ann(950, [1, 1, 4, 4])
        c.coco_index.update({
            "image entry without 'file_name'": 1, "image entry without an integer 'id'": 1,
            "duplicate image id (first entry kept)": 1, "annotation for an unknown image id": 2,
            "image entry without a valid 'width'/'height' (size read from the file)": 1,
            "category entry without an integer 'id'": 1,
        })
        c.coco_load.update({SIZE_MISMATCH: 1})
        c.coco_usable += 2

    def coco128(self, src: Path) -> None:
        """A real photo truncated, and a real photo stored rotated with EXIF orientation 6."""
        c = self.c
        c.with_coco128 = True
        labelled = sorted(p for p in (src / "labels" / "train2017").glob("*.txt") if p.read_text().strip())
        trunc, rot = labelled[0], labelled[1]
        data = (src / "images" / "train2017" / f"{trunc.stem}.jpg").read_bytes()
        (c.img_dir / "coco_trunc.jpg").write_bytes(data[: int(len(data) * 0.6)])
        shutil.copy(trunc, c.label_dir / "coco_trunc.txt")
        rows = [r for r in trunc.read_text().splitlines() if r.strip()]
        c.yolo_index.update({TRUNCATED_JPEG: 1, SKIPPED_ROW: len(rows)})

        shown = cv2.cvtColor(cv2.imread(str(src / "images" / "train2017" / f"{rot.stem}.jpg")), cv2.COLOR_BGR2RGB)
        h, w = shown.shape[:2]
        _exif_jpeg(c.img_dir / "coco_exif.jpg", shown)
        boxes = []
        for r in rot.read_text().splitlines():
            if r.strip():
                cls, cx, cy, bw, bh = (float(v) for v in r.split()[:5])
                boxes.append((int(cls), (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h))
        shutil.copy(rot, c.label_dir / "coco_exif.txt")
        c.cases["coco_exif.jpg"] = Case("coco_exif.jpg", (w, h), boxes)
        c.yolo_usable += 1

    def finish(self) -> BadCorpus:
        cats = [{"id": i + 1, "name": n} for i, n in enumerate(COCO_CLASSES)] + [{"name": "ghost"}]
        self.c.coco_entries = self.images
        data = {"images": self.images, "annotations": self.anns, "categories": cats}
        self.c.ann_file.write_text(json.dumps(data))  # NaN written as NaN, which json reads back
        return self.c


def build_bad_corpus(root: Path, coco128: Path | None = None) -> BadCorpus:
    """Write the corpus under ``root``; with ``coco128`` (its folder), add its real-photo cases."""
    b = _Builder(Path(root))
    b.good()
    b.unreadable()
    b.pixel_formats()
    b.orientation()
    b.many_boxes()
    b.duplicate_stem()
    b.garbage_labels()
    b.coco_entries()
    if coco128 is not None and (coco128 / "labels" / "train2017").is_dir():
        b.coco128(coco128)
    return b.finish()


def write_unusable_coco_jsons(root: Path) -> dict[str, tuple[Path, str]]:
    """COCO jsons no reader can use, each with a pattern its ``ValueError`` must match (file and field)."""
    root.mkdir(parents=True, exist_ok=True)
    cats = [{"id": 1, "name": "a"}]
    images = [{"id": 1, "file_name": "a.jpg", "width": 8, "height": 8}]
    cases = {
        "no_annotations": ({"images": images, "categories": cats}, r"no_annotations\.json.*'annotations' missing"),
        "images_not_list": ({"images": {}, "annotations": [], "categories": cats},
                            r"images_not_list\.json.*'images' missing or not a list"),
        "no_category_id": ({"images": images, "annotations": [], "categories": [{"name": "a"}]},
                           r"no_category_id\.json.*no usable entry in 'categories'.*integer 'id'"),
        "no_file_names": ({"images": [{"id": 1}, {"id": 2}], "annotations": [], "categories": cats},
                          r"no_file_names\.json.*no usable images.*image entry without 'file_name'"),
        "not_json": ("{'images': [", r"not_json\.json.*cannot read a COCO json"),
    }
    out = {}
    for name, (content, pattern) in cases.items():
        path = root / f"{name}.json"
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        out[name] = (path, pattern)
    return out
