"""Geometric transforms: LetterBox, RandomAffine, RandomFlip. Images stay uint8; one cv2 call each.

Boxes are xyxy pixel *edges* (a box ``[0, 0, 2, 2]`` covers pixels 0 and 1). cv2 works on pixel
centres; :func:`_cv2_matrix` converts so pixels and boxes move together exactly.
"""

from __future__ import annotations

import math
import random
from typing import Any

import cv2
import numpy as np

from detkit.data.transforms.compose import Transform

__all__ = ["LetterBox", "RandomAffine", "RandomFlip", "affine_boxes", "affine_boxes_clipped", "box_candidates"]

Sample = dict[str, Any]


def _size_hw(size: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    if isinstance(size, int) and size > 0:
        return size, size
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size):
        return int(size[0]), int(size[1])
    raise ValueError(f"{name}: size must be a positive int or (h, w) ints; got {size!r}")


def _cv2_matrix(m: np.ndarray) -> np.ndarray:
    """A 2x3 affine on pixel-edge coordinates -> the same map on cv2's pixel-centre coordinates.

    ``p_edge = p_cv + 0.5``, so ``p_cv' = A p_cv + (A @ [0.5, 0.5] + t - 0.5)``.
    """
    out = m[:2].astype(np.float64).copy()
    out[:, 2] += out[:, :2] @ np.array([0.5, 0.5]) - 0.5
    return out


def affine_boxes(boxes: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Boxes through an affine map: the bounding box of the four transformed corners.

    Args:
        boxes: ``(N, 4)`` xyxy.
        m: ``(2, 3)`` or ``(3, 3)`` affine matrix.

    Returns:
        ``(N, 4) float32`` xyxy (not clipped).
    """
    if len(boxes) == 0:
        return np.zeros((0, 4), np.float32)
    corners = boxes[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(-1, 2)  # (N, 8) -> (4N, 2) corner points
    pts = corners @ m[:2, :2].T + m[:2, 2]
    pts = pts.reshape(-1, 4, 2)  # (4N, 2) -> (N, 4 corners, 2)
    return np.concatenate([pts.min(1), pts.max(1)], 1).astype(np.float32)


def affine_boxes_clipped(boxes: np.ndarray, m: np.ndarray, w: int, h: int) -> np.ndarray:
    """Boxes through an affine map, then cut to the view ``[0, w] x [0, h]`` exactly.

    A rotated/sheared box is a parallelogram; when the view cuts it, the bounding box of its
    *visible part* is tighter than the clipped bounding box of its corners. It is the bounding box
    of: its corners inside the view, the view's corners inside it, and the crossings of its edges
    with the view's borders. Vectorised over boxes.

    Args:
        boxes: ``(N, 4)`` xyxy.
        m: ``(2, 3)`` or ``(3, 3)`` affine matrix.
        w, h: the view.

    Returns:
        ``(N, 4) float32`` xyxy inside the view; an invisible box comes out with zero size.
    """
    n = len(boxes)
    if n == 0:
        return np.zeros((0, 4), np.float32)
    quad = boxes[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(n, 4, 2).astype(np.float64)  # (N, 8) -> (N, 4, 2)
    quad = quad @ m[:2, :2].T + m[:2, 2]
    eps = 1e-6
    inside = ((quad >= -eps) & (quad <= np.array([w, h]) + eps)).all(-1)  # (N, 4)
    # view corners inside the (convex) quad: same side of all four edges
    view = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    a, b = quad, np.roll(quad, -1, axis=1)  # edges a -> b, (N, 4, 2) each
    ab = b - a
    rel = view[None, None] - a[:, :, None]  # (N, 4 edges, 4 corners, 2)
    cross = ab[:, :, None, 0] * rel[..., 1] - ab[:, :, None, 1] * rel[..., 0]
    corner_in = (cross >= -eps).all(1) | (cross <= eps).all(1)  # (N, 4 corners)
    # edge crossings with x = 0, x = w, y = 0, y = h
    pts, ok = [], []
    for axis, value in ((0, 0.0), (0, float(w)), (1, 0.0), (1, float(h))):
        d = ab[..., axis]
        t = (value - a[..., axis]) / np.where(np.abs(d) < 1e-12, np.nan, d)  # (N, 4)
        p = a + t[..., None] * ab
        p[..., axis] = value
        other = p[..., 1 - axis]
        pts.append(p)
        ok.append((t >= 0) & (t <= 1) & (other >= -eps) & (other <= (h if axis == 0 else w) + eps))
    cand = np.concatenate([quad, np.broadcast_to(view, (n, 4, 2)), *pts], 1)  # (N, 24, 2)
    valid = np.concatenate([inside, corner_in, *ok], 1)  # (N, 24)
    lo = np.where(valid[..., None], cand, np.inf).min(1)
    hi = np.where(valid[..., None], cand, -np.inf).max(1)
    out = np.concatenate([lo, hi], 1)
    out[~valid.any(1)] = 0.0
    return np.clip(out, 0, [w, h, w, h]).astype(np.float32)


def box_candidates(
    before: np.ndarray, after: np.ndarray, scale: float, min_size: float, min_area_ratio: float, max_aspect: float
) -> np.ndarray:
    """Keep mask ``(N,)`` for boxes still worth training on after a transform (YOLOv5's rule).

    A box is kept when both sides are > ``min_size`` px, its area is > ``min_area_ratio`` of the
    scaled area before, and its aspect ratio is < ``max_aspect``.
    """
    w0, h0 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w1, h1 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    aspect = np.maximum(w1 / (h1 + 1e-16), h1 / (w1 + 1e-16))
    return (w1 > min_size) & (h1 > min_size) & (w1 * h1 / (w0 * h0 * scale * scale + 1e-16) > min_area_ratio) & (
        aspect < max_aspect
    )


def _axis_span(a: float, t: float, size: int, out: int) -> tuple[int, int, int, int] | None:
    """Integer source ``[s1, s2)`` and destination ``[d1, d2)`` of ``x -> a x + t`` on one axis."""
    s1 = max(0, math.floor(-t / a))
    s2 = min(size, math.ceil((out - t) / a))
    if s2 <= s1:
        return None
    d1 = round(a * s1 + t)
    d2 = max(d1 + 1, round(a * s2 + t))
    return s1, s2, d1, d2


def _crop_resize(img: np.ndarray, m: np.ndarray, out_w: int, out_h: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """``warpAffine`` for a scale-and-shift ``m`` done as crop + ``cv2.resize`` + paste.

    The crop and its destination are whole pixels, so the map actually applied differs from ``m``
    by a fraction of a pixel; it is returned, and boxes must go through it.

    Returns:
        ``(out_h, out_w, 3) uint8`` image and the ``(3, 3)`` map applied.
    """
    canvas = np.full((out_h, out_w, img.shape[2]), pad, np.uint8)
    span_x = _axis_span(m[0, 0], m[0, 2], img.shape[1], out_w)
    span_y = _axis_span(m[1, 1], m[1, 2], img.shape[0], out_h)
    if span_x is None or span_y is None:
        return canvas, m
    (sx1, sx2, dx1, dx2), (sy1, sy2, dy1, dy2) = span_x, span_y
    part = cv2.resize(img[sy1:sy2, sx1:sx2], (dx2 - dx1, dy2 - dy1), interpolation=cv2.INTER_LINEAR)
    ox1, oy1, ox2, oy2 = max(0, dx1), max(0, dy1), min(out_w, dx2), min(out_h, dy2)
    canvas[oy1:oy2, ox1:ox2] = part[oy1 - dy1:oy2 - dy1, ox1 - dx1:ox2 - dx1]
    ax, ay = (dx2 - dx1) / (sx2 - sx1), (dy2 - dy1) / (sy2 - sy1)
    applied = np.array([[ax, 0.0, dx1 - ax * sx1], [0.0, ay, dy1 - ay * sy1], [0.0, 0.0, 1.0]])
    return canvas, applied


class LetterBox(Transform):
    """Resize keeping the aspect ratio, then pad to ``size``; records ``scale_factor`` and ``pad``.

    Args:
        size: output ``int`` (square) or ``(h, w)``.
        pad_value: grey level of the padding.
        center: pad both sides equally (else the image sits top-left).
        scaleup: allow enlarging small images (False: only shrink, as for evaluation of small inputs).
    """

    def __init__(
        self, size: int | tuple[int, int], pad_value: int = 114, center: bool = True, scaleup: bool = True
    ) -> None:
        self.size = _size_hw(size, "LetterBox")
        self.pad_value = int(pad_value)
        self.center = center
        self.scaleup = scaleup

    def __call__(self, sample: Sample) -> Sample:
        img = sample["img"]
        h, w = img.shape[:2]
        out_h, out_w = self.size
        r = min(out_h / h, out_w / w)
        if not self.scaleup:
            r = min(r, 1.0)
        nw, nh = max(1, round(w * r)), max(1, round(h * r))
        if (nw, nh) != (w, h):
            img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR if r > 1 else cv2.INTER_AREA)
        left = (out_w - nw) // 2 if self.center else 0
        top = (out_h - nh) // 2 if self.center else 0
        v = self.pad_value
        img = cv2.copyMakeBorder(img, top, out_h - nh - top, left, out_w - nw - left, cv2.BORDER_CONSTANT,
                                 value=(v, v, v))
        sx, sy = nw / w, nh / h
        scale = np.array([sx, sy, sx, sy], np.float32)
        offset = np.array([left, top, left, top], np.float32)
        sample["img"] = img
        sample["boxes"] = sample["boxes"] * scale + offset
        sample["ignore_boxes"] = sample["ignore_boxes"] * scale + offset
        psx, psy = sample.get("scale_factor", (1.0, 1.0))
        pl, pt = sample.get("pad", (0.0, 0.0))
        sample["scale_factor"] = (psx * sx, psy * sy)
        sample["pad"] = (pl * sx + left, pt * sy + top)
        return sample


class RandomAffine(Transform):
    """Random rotation, scale, shear and translation in one ``cv2.warpAffine`` (YOLOv5/YOLOX style).

    Args:
        degrees: rotation drawn from ``[-degrees, degrees]``.
        translate: shift drawn from ``[-translate, translate]`` times the output size.
        scale: ``(lo, hi)`` range, or a gain ``g`` meaning ``(1 - g, 1 + g)``.
        shear: shear angle in degrees drawn from ``[-shear, shear]`` on each axis.
        border: output = input size + ``2 * border`` (``(bx, by)`` or one int; negative crops: the
            mosaic canvas of ``2s`` with ``border=-s/2`` gives ``s``). Ignored when ``size`` is set.
        size: fixed output ``int`` or ``(h, w)``; the input's centre maps to the output's centre.
        pad_value: fill for pixels coming from outside the input.
        min_size: boxes with a side <= this (px) after the warp are dropped.
        min_area_ratio: boxes keeping <= this fraction of their scaled area are dropped.
        max_aspect: boxes with an aspect ratio >= this are dropped.
    """

    def __init__(
        self,
        degrees: float = 0.0,
        translate: float = 0.1,
        scale: float | tuple[float, float] = 0.5,
        shear: float = 0.0,
        border: int | tuple[int, int] = 0,
        size: int | tuple[int, int] | None = None,
        pad_value: int = 114,
        min_size: float = 2.0,
        min_area_ratio: float = 0.1,
        max_aspect: float = 100.0,
    ) -> None:
        if isinstance(scale, (int, float)):
            scale = (1.0 - scale, 1.0 + scale)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise ValueError(f"RandomAffine: scale must be a gain in [0, 1) or 0 < lo <= hi; got {scale!r}")
        if not 0 <= translate < 1:
            raise ValueError(f"RandomAffine: translate must be in [0, 1); got {translate!r}")
        self.degrees, self.translate = float(degrees), float(translate)
        self.scale, self.shear = tuple(scale), float(shear)
        self.border = (border, border) if isinstance(border, int) else tuple(border)
        self.size = None if size is None else _size_hw(size, "RandomAffine")
        self.pad_value = int(pad_value)
        self.min_size, self.min_area_ratio, self.max_aspect = min_size, min_area_ratio, max_aspect

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        if self.size is not None:
            return self.size
        return h + 2 * int(self.border[1]), w + 2 * int(self.border[0])

    def matrix(self, h: int, w: int, out_h: int, out_w: int) -> tuple[np.ndarray, float]:
        """A random ``(3, 3)`` map from input to output pixel edges, and its scale."""
        c = np.eye(3)
        c[:2, 2] = (-w / 2, -h / 2)  # input centre to the origin
        angle = random.uniform(-self.degrees, self.degrees)
        s = random.uniform(*self.scale)
        r = np.eye(3)
        r[:2] = cv2.getRotationMatrix2D((0, 0), angle, s)
        sh = np.eye(3)
        sh[0, 1] = math.tan(math.radians(random.uniform(-self.shear, self.shear)))
        sh[1, 0] = math.tan(math.radians(random.uniform(-self.shear, self.shear)))
        t = np.eye(3)
        t[0, 2] = random.uniform(0.5 - self.translate, 0.5 + self.translate) * out_w
        t[1, 2] = random.uniform(0.5 - self.translate, 0.5 + self.translate) * out_h
        return t @ sh @ r @ c, s

    def __call__(self, sample: Sample) -> Sample:
        img = sample["img"]
        h, w = img.shape[:2]
        out_h, out_w = self.out_size(h, w)
        m, s = self.matrix(h, w, out_h, out_w)
        v = self.pad_value
        if m[0, 1] == 0 and m[1, 0] == 0:  # scale + shift only: a crop and a resize, ~3x faster
            sample["img"], m = _crop_resize(img, m, out_w, out_h, v)
        else:
            sample["img"] = cv2.warpAffine(img, _cv2_matrix(m), (out_w, out_h), flags=cv2.INTER_LINEAR,
                                           borderMode=cv2.BORDER_CONSTANT, borderValue=(v, v, v))
        boxes = sample["boxes"]
        new = affine_boxes_clipped(boxes, m, out_w, out_h)
        keep = box_candidates(boxes, new, s, self.min_size, self.min_area_ratio, self.max_aspect)
        sample["boxes"], sample["labels"] = new[keep], sample["labels"][keep]
        ign = affine_boxes_clipped(sample["ignore_boxes"], m, out_w, out_h)
        big = ((ign[:, 2] - ign[:, 0]) > self.min_size) & ((ign[:, 3] - ign[:, 1]) > self.min_size)
        sample["ignore_boxes"] = ign[big]
        return sample


class RandomFlip(Transform):
    """Flip with probability ``p``, horizontally (default) or vertically; boxes follow.

    Args:
        p: probability of a flip.
        direction: ``"horizontal"`` or ``"vertical"``.

    Raises:
        ValueError: an unknown ``direction`` or ``p`` outside [0, 1].
    """

    def __init__(self, p: float = 0.5, direction: str = "horizontal") -> None:
        if direction not in ("horizontal", "vertical"):
            raise ValueError(f"RandomFlip: direction {direction!r}; accepted: 'horizontal', 'vertical'")
        if not 0 <= p <= 1:
            raise ValueError(f"RandomFlip: p must be in [0, 1]; got {p!r}")
        self.p, self.direction = float(p), direction

    def __call__(self, sample: Sample) -> Sample:
        if random.random() >= self.p:
            return sample
        img = sample["img"]
        h, w = img.shape[:2]
        if self.direction == "horizontal":
            sample["img"] = cv2.flip(img, 1)
            idx = [2, 1, 0, 3]  # x1' = w - x2, x2' = w - x1
            sign = np.array([-1, 1, -1, 1], np.float32)
            off = np.array([w, 0, w, 0], np.float32)
        else:
            sample["img"] = cv2.flip(img, 0)
            idx = [0, 3, 2, 1]  # y1' = h - y2, y2' = h - y1
            sign = np.array([1, -1, 1, -1], np.float32)
            off = np.array([0, h, 0, h], np.float32)
        for key in ("boxes", "ignore_boxes"):
            sample[key] = sample[key][:, idx] * sign + off
        return sample
