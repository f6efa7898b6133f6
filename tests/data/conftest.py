"""Small datasets written into tmp_path, and the path of the shared real data."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
COCO128 = SHARED / "data" / "coco128"


@pytest.fixture
def coco128() -> Path:
    if not (COCO128 / "images" / "train2017").is_dir():
        pytest.skip("shared coco128 data not present")
    return COCO128


def write_image(path: Path, w: int = 64, h: int = 48, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((h, w, 3), value, np.uint8)
    img[::7] = 30  # some texture so the JPEG is not trivial
    assert cv2.imwrite(str(path), img)


@pytest.fixture
def write_img():
    return write_image


@pytest.fixture
def coco_dir(tmp_path: Path) -> Path:
    """3 images (64x48): one with 2 boxes + a crowd box, one with only a crowd box, one empty."""
    for i in (1, 2, 3):
        write_image(tmp_path / "images" / f"{i}.jpg")
    data = {
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48} for i in (1, 2, 3)],
        "categories": [{"id": 5, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 5, "bbox": [10, 10, 20, 10], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 0, 5, 5], "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 2, "bbox": [30, 20, 10, 10], "iscrowd": 1},
            {"id": 4, "image_id": 2, "category_id": 5, "bbox": [1, 2, 3, 4], "iscrowd": 1},
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(data))
    return tmp_path


@pytest.fixture(scope="session")
def bad_corpus(tmp_path_factory):
    """The bad-input corpus (tests/data/bad_corpus.py), with coco128's cases when it is there."""
    from tests.data.bad_corpus import build_bad_corpus

    src = COCO128 if (COCO128 / "labels" / "train2017").is_dir() else None
    return build_bad_corpus(tmp_path_factory.mktemp("bad_corpus"), src)
