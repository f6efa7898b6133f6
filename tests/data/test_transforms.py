"""Transforms keep boxes consistent with pixels: each box is drawn as a filled rectangle in a
mask image, the mask goes through the transform as the image, and every transformed box must
tightly bound the mask pixels around it (and no mask pixels may lie outside all boxes)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from detkit.data.base import empty_sample
from detkit.data.transforms import (
    Albu,
    Compose,
    LetterBox,
    MixUp,
    Mosaic,
    RandomAffine,
    RandomFlip,
    RandomHSV,
    affine_boxes,
)

TOL = 1.6  # px: bilinear resampling of a binary edge, thresholded at half


def mask_sample(h: int, w: int, boxes: list[list[int]], image_id: int = 0) -> dict:
    img = np.zeros((h, w, 3), np.uint8)
    for x1, y1, x2, y2 in boxes:
        img[y1:y2, x1:x2] = 255
    s = empty_sample(img, image_id)
    s["boxes"] = np.array(boxes, np.float32).reshape(-1, 4)
    s["labels"] = np.arange(len(boxes), dtype=np.int64)
    return s


def grid_boxes(h: int, w: int, rng: random.Random, n: int = 4) -> list[list[int]]:
    """Up to ``n`` separated boxes: one per cell of a 2x2 grid, away from the cell borders."""
    out = []
    for cy in range(2):
        for cx in range(2):
            if len(out) == n:
                break
            cw, ch = w // 2, h // 2
            bw, bh = rng.randint(cw // 5, cw // 2), rng.randint(ch // 5, ch // 2)
            x1 = cx * cw + rng.randint(cw // 6, cw - bw - cw // 6)
            y1 = cy * ch + rng.randint(ch // 6, ch - bh - ch // 6)
            out.append([x1, y1, x1 + bw, y1 + bh])
    return out


def assert_boxes_match_mask(sample: dict, pad: int = 3, thresh: int = 127) -> None:
    """``thresh`` 0 counts any coverage: rotated corners are thinner than a pixel and vanish at 127."""
    mask = sample["img"][..., 0] > thresh
    h, w = mask.shape
    covered = np.zeros_like(mask)
    for box in sample["boxes"]:
        x1, y1, x2, y2 = box
        lo_x, lo_y = max(0, int(x1) - pad), max(0, int(y1) - pad)
        hi_x, hi_y = min(w, int(np.ceil(x2)) + pad), min(h, int(np.ceil(y2)) + pad)
        ys, xs = np.nonzero(mask[lo_y:hi_y, lo_x:hi_x])
        assert len(xs), f"box {box} has no object pixels"
        got = np.array([xs.min() + lo_x, ys.min() + lo_y, xs.max() + 1 + lo_x, ys.max() + 1 + lo_y])
        np.testing.assert_allclose(got, box, atol=TOL, err_msg=f"mask bbox {got} vs box {box}")
        covered[lo_y:hi_y, lo_x:hi_x] = True
    stray = mask & ~covered
    assert stray.sum() <= 8, f"{stray.sum()} object pixels lie outside every box (a box was lost)"


@pytest.mark.parametrize("size,shape", [(64, (40, 80)), ((96, 64), (50, 50)), (32, (100, 60))])
def test_letterbox_boxes_follow_pixels_and_meta(size, shape):
    rng = random.Random(0)
    s = mask_sample(*shape, grid_boxes(*shape, rng))
    s["ignore_boxes"] = s["boxes"][:1].copy()
    out = LetterBox(size, pad_value=0)(s)
    oh, ow = (size, size) if isinstance(size, int) else size
    assert out["img"].shape == (oh, ow, 3)
    assert_boxes_match_mask(out, pad=2)
    sx, sy = out["scale_factor"]
    left, top = out["pad"]
    np.testing.assert_allclose(out["ignore_boxes"], out["boxes"][:1])
    # undoing the recorded scale and pad gives the original boxes back
    orig = (out["boxes"] - [left, top, left, top]) / [sx, sy, sx, sy]
    np.testing.assert_allclose(orig, mask_sample(*shape, grid_boxes(*shape, random.Random(0)))["boxes"], atol=1e-3)


def test_letterbox_exact_values():
    s = mask_sample(50, 100, [[10, 10, 30, 20]])
    out = LetterBox(200)(s)
    assert out["scale_factor"] == (2.0, 2.0) and out["pad"] == (0.0, 50.0)
    np.testing.assert_allclose(out["boxes"], [[20, 70, 60, 90]])
    assert out["img"][0, 0, 0] == 114  # padding grey


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kw", [
    dict(degrees=0, translate=0.1, scale=0.3, shear=0),
    dict(degrees=30, translate=0.0, scale=(0.8, 1.2), shear=0),
    dict(degrees=10, translate=0.1, scale=0.2, shear=8),
])
def test_random_affine_boxes_follow_pixels(seed, kw):
    random.seed(seed)
    s = mask_sample(128, 160, grid_boxes(128, 160, random.Random(seed)))
    out = RandomAffine(**kw, pad_value=0, min_area_ratio=0.0, min_size=3)(s)
    assert out["img"].shape == (128, 160, 3)
    assert len(out["boxes"]) == len(out["labels"])
    assert_boxes_match_mask(out, thresh=0 if kw["degrees"] or kw["shear"] else 127)


def test_random_affine_identity_is_exact():
    s = mask_sample(40, 60, [[5, 6, 20, 30]])
    img = s["img"].copy()
    out = RandomAffine(translate=0.0, scale=(1.0, 1.0))(s)
    np.testing.assert_array_equal(out["img"], img)
    np.testing.assert_allclose(out["boxes"], [[5, 6, 20, 30]])


def test_random_affine_output_size_and_ignore_boxes():
    random.seed(1)
    s = mask_sample(200, 200, [[50, 50, 100, 100]])
    s["ignore_boxes"] = np.array([[50, 50, 100, 100], [190, 190, 200, 200]], np.float32)
    out = RandomAffine(size=100, translate=0.0, scale=(1.0, 1.0), pad_value=0)(s)
    assert out["img"].shape == (100, 100, 3)  # the centre 100x100 of the input
    np.testing.assert_allclose(out["boxes"], [[0, 0, 50, 50]], atol=1e-4)
    np.testing.assert_allclose(out["ignore_boxes"], [[0, 0, 50, 50]], atol=1e-4)  # the other left the view
    out = RandomAffine(border=(-50, -25), translate=0.0, scale=(1.0, 1.0))(mask_sample(200, 200, []))
    assert out["img"].shape == (150, 100, 3)


def test_affine_drops_boxes_leaving_the_view():
    random.seed(0)
    s = mask_sample(100, 100, [[0, 0, 10, 10], [40, 40, 60, 60]])
    out = RandomAffine(size=50, translate=0.0, scale=(1.0, 1.0))(s)
    np.testing.assert_array_equal(out["labels"], [1])


@pytest.mark.parametrize("direction", ["horizontal", "vertical"])
def test_flip_boxes_follow_pixels(direction):
    s = mask_sample(60, 90, grid_boxes(60, 90, random.Random(3)))
    s["ignore_boxes"] = s["boxes"].copy()
    out = RandomFlip(p=1.0, direction=direction)(s)
    assert_boxes_match_mask(out, pad=0)
    np.testing.assert_allclose(out["ignore_boxes"], out["boxes"])


def test_flip_exact_and_p_zero():
    out = RandomFlip(p=1.0)(mask_sample(10, 100, [[10, 2, 30, 8]]))
    np.testing.assert_allclose(out["boxes"], [[70, 2, 90, 8]])
    s = mask_sample(10, 100, [[10, 2, 30, 8]])
    np.testing.assert_allclose(RandomFlip(p=0.0)(s)["boxes"], [[10, 2, 30, 8]])
    with pytest.raises(ValueError, match="direction"):
        RandomFlip(direction="diagonal")


def test_hsv_changes_colour_not_boxes():
    np.random.seed(0)
    s = mask_sample(20, 20, [[2, 2, 8, 8]])
    s["img"][:] = (200, 80, 40)
    out = RandomHSV(h=0.5, s=0.5, v=0.5)(s)
    assert out["img"].shape == (20, 20, 3) and out["img"].dtype == np.uint8
    assert not np.array_equal(out["img"][0, 0], [200, 80, 40])
    np.testing.assert_allclose(out["boxes"], [[2, 2, 8, 8]])
    with pytest.raises(ValueError, match="gain"):
        RandomHSV(h=2.0)


class MaskDataset:
    """Samples of random sizes with separated boxes drawn in the mask."""

    def __init__(self, n: int = 6) -> None:
        self.items = []
        for i in range(n):
            r = random.Random(100 + i)
            h, w = r.randint(60, 140), r.randint(60, 140)
            self.items.append((h, w, grid_boxes(h, w, r, n=r.randint(0, 4))))

    def load_sample(self, i: int) -> dict:
        return mask_sample(*self.items[i], image_id=i)

    def random_index(self) -> int:
        return random.randrange(len(self.items))


@pytest.mark.parametrize("seed", range(5))
def test_mosaic_then_affine_boxes_follow_pixels(seed):
    random.seed(seed)
    ds = MaskDataset()
    pipe = Compose([Mosaic(size=96, pad_value=0), RandomAffine(size=96, pad_value=0, min_area_ratio=0.0, min_size=3)])
    pipe.bind(ds)
    first = ds.load_sample(0)
    mosaic = pipe.transforms[0](first)
    assert mosaic["img"].shape == (192, 192, 3)
    assert_boxes_match_mask(mosaic, pad=1)
    out = pipe.transforms[1](mosaic)
    assert out["img"].shape == (96, 96, 3)
    assert_boxes_match_mask(out)


def test_mosaic_bookkeeping_keeps_every_box_of_four_images():
    random.seed(0)

    class Fixed(MaskDataset):
        def random_index(self) -> int:
            return 0

    ds = Fixed()
    m = Mosaic(size=64, center_range=(1.0, 1.0), pad_value=0)
    m.bind(ds)
    s = mask_sample(64, 64, [[10, 10, 20, 20]])
    s["ignore_boxes"] = np.array([[1, 1, 3, 3]], np.float32)
    ds.load_sample = lambda i: mask_sample(64, 64, [[10, 10, 20, 20]])  # the same tile four times
    out = m(s)
    # centre (64, 64): tiles fill the canvas exactly, boxes shift by 0 or 64
    expect = [[10 + dx, 10 + dy, 20 + dx, 20 + dy] for dx, dy in [(0, 0), (64, 0), (0, 64), (64, 64)]]
    np.testing.assert_allclose(out["boxes"], expect)
    np.testing.assert_allclose(out["ignore_boxes"], [[1, 1, 3, 3]])
    assert out["labels"].dtype == np.int64 and len(out["labels"]) == 4


def test_mosaic_disabled_only_resizes():
    m = Mosaic(size=50, enabled=False)
    out = m(mask_sample(100, 40, [[0, 0, 20, 50]]))
    assert out["img"].shape == (50, 20, 3)
    np.testing.assert_allclose(out["boxes"], [[0, 0, 10, 25]])


def test_mixup_keeps_both_box_sets():
    random.seed(0)
    ds = MaskDataset()
    mix = MixUp(p=1.0)
    mix.bind(ds, before=[LetterBox(64, pad_value=0)])
    s = LetterBox(64, pad_value=0)(mask_sample(64, 64, [[4, 4, 12, 12]]))
    other_count = None
    out = mix(s)
    other_count = len(out["boxes"]) - 1
    assert out["img"].shape == (64, 64, 3)
    np.testing.assert_allclose(out["boxes"][0], [4, 4, 12, 12])
    assert other_count >= 0 and len(out["labels"]) == len(out["boxes"])
    assert MixUp(p=1.0, enabled=False)(s) is s


def test_albu_blur_and_crop_filter_boxes():
    import albumentations as A

    s = mask_sample(100, 100, [[10, 10, 30, 30], [60, 60, 95, 95]])
    s["ignore_boxes"] = np.array([[70, 70, 80, 80]], np.float32)
    t = Albu([A.Crop(0, 0, 65, 65, p=1.0), dict(type="Blur", blur_limit=3, p=1.0)],
             bbox_params=dict(min_visibility=0.2))
    out = t(s)
    assert out["img"].shape == (65, 65, 3)
    np.testing.assert_allclose(out["boxes"], [[10, 10, 30, 30]])  # the other keeps 5x5/35x35 < 0.2
    np.testing.assert_array_equal(out["labels"], [0])
    assert out["ignore_boxes"].shape == (0, 4)
    with pytest.raises(ValueError, match="NoSuchBlur"):
        Albu([dict(type="NoSuchBlur")])


def test_affine_boxes_rotation_exact():
    m = np.array([[0.0, -1.0, 10.0], [1.0, 0.0, 0.0]])  # 90 degrees
    np.testing.assert_allclose(affine_boxes(np.array([[1, 2, 3, 5]], np.float32), m), [[5, 1, 8, 3]])


def test_scale_shift_fast_path_matches_warp_affine():
    import cv2

    from detkit.data.transforms.geometric import _crop_resize, _cv2_matrix

    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8), (9, 9), 3)
    m = np.array([[0.8, 0.0, -7.3], [0.0, 0.8, 11.6], [0.0, 0.0, 1.0]])
    fast, applied = _crop_resize(img, m, 100, 80, 114)
    slow = cv2.warpAffine(img, _cv2_matrix(applied), (100, 80), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(114, 114, 114))
    np.testing.assert_allclose(applied[:2], m[:2], atol=1.0)  # whole-pixel rounding only
    inner = (slice(14, 70), slice(2, 90))
    assert np.abs(fast[inner].astype(int) - slow[inner].astype(int)).mean() < 2.0


def test_cached_images_are_read_only_and_reused(coco_dir):
    from detkit.data import CocoDataset

    ds = CocoDataset(str(coco_dir / "ann.json"), str(coco_dir / "images"), cache_size=2)
    a = ds.load_sample(0)["img"]
    assert ds.load_sample(0)["img"] is a and not a.flags.writeable
    ds.load_sample(1), ds.load_sample(2)
    assert len(ds._cache) == 2 and 0 not in ds._cache  # first in, first out
    with pytest.raises(ValueError, match="cache_size"):
        CocoDataset(str(coco_dir / "ann.json"), str(coco_dir / "images"), cache_size=-1)
