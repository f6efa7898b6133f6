"""Prior generators: YOLO anchor boxes per level and points per level.

Both generators lay their priors out in the order the head flattens its raw maps
(``(B, A*(5+C), H, W) -> (B, H, W, A, 5+C) -> (B, H*W*A, 5+C)``, levels concatenated):
level, then location (row-major: y, then x), then anchor. A prior is an ``xyxy`` box in input
pixels centred on its cell centre ``((x + 0.5) * stride, (y + 0.5) * stride)``.

``grid_priors`` returns ``(priors (N, 4), prior_strides (N,), num_level_priors list[int])`` and
caches the result per (feature-map sizes, device), since every training step asks for the same
grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["YOLOV4_COCO_ANCHORS", "PointGenerator", "YOLOAnchorGenerator"]

# The 9 anchors (w, h in pixels at 608/640 input) YOLOv4 uses on COCO, for strides 8, 16, 32.
YOLOV4_COCO_ANCHORS: list[list[tuple[float, float]]] = [
    [(12, 16), (19, 36), (40, 28)],
    [(36, 75), (76, 55), (72, 146)],
    [(142, 110), (192, 243), (459, 401)],
]

PriorGrid = tuple[Tensor, Tensor, list[int]]


def _check_strides(strides: Sequence[float]) -> list[float]:
    strides = [float(s) for s in strides]
    if not strides or any(s <= 0 for s in strides):
        raise ValueError(f"strides must be a non-empty list of positive numbers, got {strides}")
    return strides


def _check_featmap_sizes(featmap_sizes: Sequence[Sequence[int]], num_levels: int) -> list[tuple[int, int]]:
    sizes = [tuple(int(v) for v in s) for s in featmap_sizes]
    if len(sizes) != num_levels or any(len(s) != 2 or min(s) < 0 for s in sizes):
        raise ValueError(
            f"featmap_sizes must be {num_levels} (height, width) pairs of non-negative ints "
            f"(one per stride), got {list(featmap_sizes)}"
        )
    return sizes  # type: ignore[return-value]


def cell_centres(height: int, width: int, stride: float, device: torch.device | str) -> Tensor:
    """Centres of a ``height x width`` grid of cells of side ``stride``.

    Returns:
        ``Tensor[H*W, 2]`` fp32 (cx, cy), row-major (y outer, x inner).
    """
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * stride
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")  # (H, W) each
    return torch.stack([cx, cy], dim=-1).reshape(-1, 2)  # (H, W, 2) -> (H*W, 2)


class _GridPriorGenerator:
    """Shared caching and concatenation; subclasses give each level's per-location box sizes."""

    def __init__(self, strides: Sequence[float]) -> None:
        self.strides = _check_strides(strides)
        self._cache: dict[tuple, PriorGrid] = {}

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def num_base_priors(self) -> int:
        """A, the number of priors per location (the same on every level)."""
        raise NotImplementedError

    def level_sizes(self, level: int) -> Tensor:
        """``Tensor[A, 2]`` fp32 (w, h) of the priors at one location of ``level``."""
        raise NotImplementedError

    def grid_priors(self, featmap_sizes: Sequence[Sequence[int]], device: torch.device | str = "cpu") -> PriorGrid:
        """Priors of every level.

        Args:
            featmap_sizes: ``[(H, W), ...]`` one per level, in the order of ``strides``.
            device: device of the returned tensors.

        Returns:
            ``priors Tensor[N, 4]`` xyxy fp32, ``prior_strides Tensor[N]`` fp32 and
            ``num_level_priors`` (``H*W*A`` per level), ``N = sum(num_level_priors)``.
        """
        sizes = _check_featmap_sizes(featmap_sizes, self.num_levels)
        key = (tuple(sizes), str(torch.device(device)))
        if key not in self._cache:
            self._cache[key] = self._build(sizes, torch.device(device))
        return self._cache[key]

    def _build(self, sizes: list[tuple[int, int]], device: torch.device) -> PriorGrid:
        boxes, strides, counts = [], [], []
        for level, ((h, w), stride) in enumerate(zip(sizes, self.strides)):
            centres = cell_centres(h, w, stride, device)  # (H*W, 2)
            half = self.level_sizes(level).to(device) / 2  # (A, 2)
            lt = centres[:, None, :] - half[None]  # (H*W, A, 2)
            rb = centres[:, None, :] + half[None]  # (H*W, A, 2)
            level_boxes = torch.cat([lt, rb], dim=-1).reshape(-1, 4)  # (H*W, A, 4) -> (H*W*A, 4)
            boxes.append(level_boxes)
            strides.append(torch.full((level_boxes.shape[0],), stride, device=device))
            counts.append(level_boxes.shape[0])
        return torch.cat(boxes), torch.cat(strides), counts


class YOLOAnchorGenerator(_GridPriorGenerator):
    """Anchor boxes of fixed sizes per level, centred on each cell centre (YOLOv3/v4).

    Args:
        base_sizes: per level, a list of ``(w, h)`` anchor sizes in input pixels; every level
            must have the same number of anchors A.
        strides: the stride of each level, e.g. ``[8, 16, 32]``.
    """

    def __init__(
        self,
        base_sizes: Sequence[Sequence[tuple[float, float]]] = YOLOV4_COCO_ANCHORS,
        strides: Sequence[float] = (8, 16, 32),
    ) -> None:
        super().__init__(strides)
        levels = [[tuple(float(v) for v in wh) for wh in level] for level in base_sizes]
        counts = {len(level) for level in levels}
        bad = [wh for level in levels for wh in level if len(wh) != 2 or min(wh) <= 0]
        if len(levels) != len(self.strides) or len(counts) != 1 or 0 in counts or bad:
            raise ValueError(
                "base_sizes must give, for each of the "
                f"{len(self.strides)} strides, the same number (>= 1) of positive (w, h) pairs; "
                f"got {len(levels)} levels with anchor counts {[len(lv) for lv in levels]}"
                + (f" and invalid sizes {bad}" if bad else "")
            )
        self.base_sizes = levels
        self._sizes = [torch.tensor(level, dtype=torch.float32) for level in levels]  # (A, 2) each

    @property
    def num_base_priors(self) -> int:
        return len(self.base_sizes[0])

    def level_sizes(self, level: int) -> Tensor:
        return self._sizes[level]

    def __repr__(self) -> str:
        return f"YOLOAnchorGenerator(base_sizes={self.base_sizes}, strides={self.strides})"


class PointGenerator(_GridPriorGenerator):
    """One point prior per cell for anchor-free heads, as a square of side ``scale * stride``.

    The square (rather than a zero-size point) lets IoU-based assigners (max-IoU, ATSS) work
    on points; centre-based assigners only read the centre. The default ``scale=8`` is ATSS's
    reference setting (one square anchor of side 8 * stride per location).

    Args:
        strides: the stride of each level.
        scale: side of the square, in strides.
    """

    def __init__(self, strides: Sequence[float] = (8, 16, 32), scale: float = 8.0) -> None:
        super().__init__(strides)
        if not scale > 0:
            raise ValueError(f"scale must be a positive number of strides, got {scale}")
        self.scale = float(scale)

    @property
    def num_base_priors(self) -> int:
        return 1

    def level_sizes(self, level: int) -> Tensor:
        side = self.scale * self.strides[level]
        return torch.tensor([[side, side]], dtype=torch.float32)

    def __repr__(self) -> str:
        return f"PointGenerator(strides={self.strides}, scale={self.scale})"
