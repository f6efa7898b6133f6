"""Photometric transforms (boxes untouched)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from detkit.data.transforms.compose import Transform

__all__ = ["RandomHSV"]

Sample = dict[str, Any]

_RANGE = np.arange(256, dtype=np.int16)


class RandomHSV(Transform):
    """Random hue / saturation / value gains through one 3-channel lookup table (YOLOv5's augment_hsv).

    Args:
        h: hue gain range: the hue is multiplied by ``1 + U(-h, h)`` (OpenCV hue is 0..179).
        s: saturation gain range, ``1 + U(-s, s)``.
        v: value gain range, ``1 + U(-v, v)``.
    """

    def __init__(self, h: float = 0.015, s: float = 0.7, v: float = 0.4) -> None:
        for name, g in (("h", h), ("s", s), ("v", v)):
            if not 0 <= g <= 1:
                raise ValueError(f"RandomHSV: {name} gain must be in [0, 1]; got {g!r}")
        self.h, self.s, self.v = float(h), float(s), float(v)

    def __call__(self, sample: Sample) -> Sample:
        if not (self.h or self.s or self.v):
            return sample
        gh, gs, gv = np.random.uniform(-1, 1, 3) * (self.h, self.s, self.v) + 1
        lut = np.stack([(_RANGE * gh) % 180, np.clip(_RANGE * gs, 0, 255), np.clip(_RANGE * gv, 0, 255)], 1)
        lut = lut.astype(np.uint8).reshape(256, 1, 3)  # (256, 3) -> (256, 1, 3): one table per channel
        hsv = cv2.cvtColor(sample["img"], cv2.COLOR_RGB2HSV)
        cv2.LUT(hsv, lut, dst=hsv)  # in place, no split / merge
        sample["img"] = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB, dst=hsv)
        return sample
