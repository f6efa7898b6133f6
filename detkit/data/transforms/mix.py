"""Transforms that mix in other samples: Mosaic (4 images) and MixUp (2 images blended).

Both draw extra samples from the dataset given by :meth:`bind` (the dataset binds its pipeline
when built) and are switchable (``set_enabled``): the trainer turns them off for the last epochs.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from detkit.data.transforms.compose import Transform

__all__ = ["MixUp", "Mosaic"]

Sample = dict[str, Any]


def _resize_long_side(sample: Sample, size: int) -> tuple[np.ndarray, float]:
    """The sample's image resized so its longer side is ``size``, and the factor used."""
    img = sample["img"]
    h, w = img.shape[:2]
    r = size / max(h, w)
    if r != 1:
        img = cv2.resize(img, (max(1, round(w * r)), max(1, round(h * r))), interpolation=cv2.INTER_LINEAR)
    return img, r


def _place(
    boxes: np.ndarray, sx: float, sy: float, dx: float, dy: float, region: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Scale + shift boxes ``(N, 4)``, clip them to ``region`` (x1, y1, x2, y2); return boxes and keep mask."""
    out = boxes * np.array([sx, sy, sx, sy], np.float32) + np.array([dx, dy, dx, dy], np.float32)
    out = np.clip(out, region[[0, 1, 0, 1]], region[[2, 3, 2, 3]])
    keep = ((out[:, 2] - out[:, 0]) >= 1) & ((out[:, 3] - out[:, 1]) >= 1)
    return out, keep


class Mosaic(Transform):
    """Four images in a ``2*size`` canvas around a random centre (YOLOv4/v5 mosaic).

    The output is the ``(2*size, 2*size, 3)`` canvas; follow it with ``RandomAffine(size=size)``,
    which crops (and warps) it to ``size`` in the same warp. With ``enabled=False`` or when the
    ``p`` draw fails, the sample's image is only resized so its longer side is ``size``.
    Each image's boxes are clipped to the part of it that shows in the canvas.

    Args:
        size: the training image size ``s``.
        p: probability of a mosaic.
        pad_value: canvas fill.
        center_range: the centre is drawn from ``[lo*s, hi*s]`` on each axis.
        enabled: False resizes only (the trainer turns mosaic off for the last epochs:
            ``schedule.no_mosaic_last_epochs``).

    Raises:
        ValueError: a ``size`` that is not a positive int, or ``p`` outside [0, 1].
    """

    def __init__(self, size: int = 640, p: float = 1.0, pad_value: int = 114,
                 center_range: tuple[float, float] = (0.5, 1.5), enabled: bool = True) -> None:
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"Mosaic: size must be a positive int; got {size!r}")
        if not 0 <= p <= 1:
            raise ValueError(f"Mosaic: p must be in [0, 1]; got {p!r}")
        self.size, self.p, self.pad_value = size, float(p), int(pad_value)
        self.center_range = tuple(center_range)
        self.enabled = enabled
        self.dataset: Any = None

    def set_enabled(self, enabled: bool) -> None:
        """On or off (:class:`~detkit.data.transforms.compose.SwitchableTransform`: the trainer's last epochs)."""
        self.enabled = enabled

    def bind(self, dataset: Any, before: Sequence[Callable] = ()) -> None:
        self.dataset = dataset

    def __call__(self, sample: Sample) -> Sample:
        s = self.size
        if not self.enabled or random.random() >= self.p:
            img, r = _resize_long_side(sample, s)
            sample["img"] = img
            sample["boxes"] = sample["boxes"] * np.float32(r)
            sample["ignore_boxes"] = sample["ignore_boxes"] * np.float32(r)
            return sample
        if self.dataset is None:
            raise RuntimeError("Mosaic needs a dataset: put it in a dataset's pipeline (the dataset binds it)")
        samples = [sample] + [self.dataset.load_sample(self.dataset.random_index()) for _ in range(3)]
        lo, hi = self.center_range
        xc, yc = (int(random.uniform(lo * s, hi * s)) for _ in range(2))
        canvas = np.full((2 * s, 2 * s, 3), self.pad_value, np.uint8)
        boxes, labels, ignores = [], [], []
        for i, smp in enumerate(samples):
            img, r = _resize_long_side(smp, s)
            h, w = img.shape[:2]
            # (x1a, y1a, x2a, y2a) in the canvas <- (x1b, y1b, x2b, y2b) in the image
            if i == 0:  # top left
                x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
                x1b, y1b = w - (x2a - x1a), h - (y2a - y1a)
            elif i == 1:  # top right
                x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, 2 * s), yc
                x1b, y1b = 0, h - (y2a - y1a)
            elif i == 2:  # bottom left
                x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(2 * s, yc + h)
                x1b, y1b = w - (x2a - x1a), 0
            else:  # bottom right
                x1a, y1a, x2a, y2a = xc, yc, min(xc + w, 2 * s), min(2 * s, yc + h)
                x1b, y1b = 0, 0
            canvas[y1a:y2a, x1a:x2a] = img[y1b:y1b + (y2a - y1a), x1b:x1b + (x2a - x1a)]
            region = np.array([x1a, y1a, x2a, y2a], np.float32)
            b, keep = _place(smp["boxes"], r, r, x1a - x1b, y1a - y1b, region)
            boxes.append(b[keep])
            labels.append(smp["labels"][keep])
            g, keep = _place(smp["ignore_boxes"], r, r, x1a - x1b, y1a - y1b, region)
            ignores.append(g[keep])
        sample["img"] = canvas
        sample["boxes"] = np.concatenate(boxes).astype(np.float32)
        sample["labels"] = np.concatenate(labels).astype(np.int64)
        sample["ignore_boxes"] = np.concatenate(ignores).astype(np.float32)
        return sample


class MixUp(Transform):
    """Blend with a second sample run through the same transforms that precede this one.

    ``img = r * img + (1 - r) * other`` with ``r ~ Beta(alpha, alpha)``; both sets of boxes are
    kept (YOLOv5's mixup). A second image of another size is letterboxed top-left first.

    Args:
        p: probability of a mixup.
        alpha: Beta distribution parameter (32 keeps ``r`` near 0.5).
        pad_value: fill of the letterbox of a second image of another size.
        enabled: False passes samples through (turned off with mosaic for the last epochs).

    Raises:
        ValueError: ``p`` outside [0, 1] or a non-positive ``alpha``.
    """

    def __init__(self, p: float = 0.15, alpha: float = 32.0, pad_value: int = 114, enabled: bool = True) -> None:
        if not 0 <= p <= 1:
            raise ValueError(f"MixUp: p must be in [0, 1]; got {p!r}")
        if alpha <= 0:
            raise ValueError(f"MixUp: alpha must be > 0; got {alpha!r}")
        self.p, self.alpha, self.pad_value, self.enabled = float(p), float(alpha), int(pad_value), enabled
        self.dataset: Any = None
        self._before: list[Callable] = []

    def set_enabled(self, enabled: bool) -> None:
        """On or off (:class:`~detkit.data.transforms.compose.SwitchableTransform`: the trainer's last epochs)."""
        self.enabled = enabled

    def bind(self, dataset: Any, before: Sequence[Callable] = ()) -> None:
        self.dataset = dataset
        self._before = list(before)

    def _other(self, shape: tuple[int, ...]) -> Sample:
        other = self.dataset.load_sample(self.dataset.random_index())
        for t in self._before:
            other = t(other)
        img = other["img"]
        if img.shape != shape:
            h, w = img.shape[:2]
            r = min(shape[0] / h, shape[1] / w)
            nh, nw = max(1, min(shape[0], round(h * r))), max(1, min(shape[1], round(w * r)))
            canvas = np.full(shape, self.pad_value, np.uint8)
            canvas[:nh, :nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
            other["img"] = canvas
            scale = np.array([nw / w, nh / h, nw / w, nh / h], np.float32)
            other["boxes"] = other["boxes"] * scale
            other["ignore_boxes"] = other["ignore_boxes"] * scale
        return other

    def __call__(self, sample: Sample) -> Sample:
        if not self.enabled or random.random() >= self.p:
            return sample
        if self.dataset is None:
            raise RuntimeError("MixUp needs a dataset: put it in a dataset's pipeline (the dataset binds it)")
        other = self._other(sample["img"].shape)
        r = float(np.random.beta(self.alpha, self.alpha))
        sample["img"] = cv2.addWeighted(sample["img"], r, other["img"], 1 - r, 0.0)
        for key in ("boxes", "labels", "ignore_boxes"):
            sample[key] = np.concatenate([sample[key], other[key]])
        return sample
