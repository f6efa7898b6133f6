"""Prior generators: YOLO anchor boxes per level and points per level.

Both generators lay their priors out in the order the head flattens its raw maps
(``(B, A*(5+C), H, W) -> (B, H, W, A, 5+C) -> (B, H*W*A, 5+C)``, levels concatenated):
level, then location (row-major: y, then x), then anchor. A prior is an ``xyxy`` box in input
pixels centred on ``((x + offset) * stride, (y + offset) * stride)``: the cell centre (``offset=0.5``,
every YOLO generator) or, for a :class:`PointGenerator` built with ``offset=0.0``, the cell's top-left
corner (RTMDet's ``MlvlPointGenerator(offset=0)``).

``grid_priors`` returns a :class:`PriorGrid`: the prior boxes ``(N, 4)``, their strides ``(N,)`` and
the levels (:class:`GridLevel`: start, height, width, anchors per cell, stride, offset, anchor sizes,
column and row centres), and caches it per (feature-map sizes, device), since every training step
asks for the same grid. Heads hand the grid to their assigner, whose candidate tables
(:mod:`detkit.assigners.candidates`) use the levels' arithmetic instead of testing all N priors.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["YOLOV4_COCO_ANCHORS", "GridLevel", "PointGenerator", "PriorGrid", "YOLOAnchorGenerator"]

# The 9 anchors (w, h in pixels at 608/640 input) YOLOv4 uses on COCO, for strides 8, 16, 32.
YOLOV4_COCO_ANCHORS: list[list[tuple[float, float]]] = [
    [(12, 16), (19, 36), (40, 28)],
    [(36, 75), (76, 55), (72, 146)],
    [(142, 110), (192, 243), (459, 401)],
]

CELL_OFFSET = 0.5  # a cell's centre, in cells from its top-left corner (the default prior position)


@dataclass(frozen=True, eq=False)
class GridLevel:
    """One level of a :class:`PriorGrid`: ``height x width`` cells (row-major), ``anchors`` priors per cell.

    The level's priors are ``start .. start + size``; the prior of cell ``(y, x)`` and anchor ``a`` is
    ``start + (y * width + x) * anchors + a``, centred on ``((x + offset) * stride, (y + offset) * stride)``.

    Attributes:
        start: index of the level's first prior in the grid's N.
        height, width: ``H`` and ``W`` (either may be 0: an empty level).
        anchors: ``A``, priors per cell.
        stride: the level's stride (px).
        offset: where the priors sit in their cell, in cells from its top-left corner (0.5: the centre).
        anchor_sizes: ``Tensor[A, 2]`` fp32 (w, h) of each cell's priors (px).
        xs: ``Tensor[W]`` fp32 column centres, ascending, computed as the assigners compute a prior's
            centre, ``(x1 + x2) / 2`` of the first anchor's boxes (so window arithmetic and per-prior tests
            see the same numbers).
        ys: ``Tensor[H]`` fp32 row centres, likewise.
        extent: ``(ex, ey)`` the largest distance (px) from a prior's centre to its box's sides.
        shared_centres: True when every anchor of a cell has the centre ``(xs[x], ys[y])`` bit for bit
            (anchor sizes whose halves round differently can break this; exact window tests then
            widen by a tolerance).
    """

    start: int
    height: int
    width: int
    anchors: int
    stride: float
    offset: float
    anchor_sizes: Tensor
    xs: Tensor
    ys: Tensor
    extent: tuple[float, float]
    shared_centres: bool = True

    @property
    def size(self) -> int:
        """Number of priors on the level, ``H * W * A``."""
        return self.height * self.width * self.anchors

    @property
    def stop(self) -> int:
        """Index one past the level's last prior."""
        return self.start + self.size


@dataclass(frozen=True, eq=False)
class PriorGrid:
    """Priors laid out as grids, one per level (what ``grid_priors`` returns and heads pass to ``assign``).

    Unpacks as the former tuple, ``boxes, strides, num_level_priors = grid``.

    Attributes:
        boxes: ``Tensor[N, 4]`` xyxy fp32 prior boxes, level after level (see :class:`GridLevel` for the order).
        strides: ``Tensor[N]`` fp32 stride of each prior's level.
        levels: one :class:`GridLevel` per level, empty levels included.
        centres: ``Tensor[N, 2]`` fp32 ``(x1 + x2) / 2, (y1 + y2) / 2`` of the boxes.
    """

    boxes: Tensor
    strides: Tensor
    levels: tuple[GridLevel, ...]
    centres: Tensor = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "centres", (self.boxes[:, :2] + self.boxes[:, 2:]) / 2)  # (N, 4) -> (N, 2)

    @property
    def num_priors(self) -> int:
        """N."""
        return int(self.boxes.shape[0])

    @property
    def num_level_priors(self) -> list[int]:
        """``[H * W * A, ...]`` per level, summing to N."""
        return [level.size for level in self.levels]

    @property
    def device(self) -> torch.device:
        return self.boxes.device

    def __iter__(self) -> Iterator[object]:
        """``boxes, strides, num_level_priors``: the tuple ``grid_priors`` returned before it was a class."""
        return iter((self.boxes, self.strides, self.num_level_priors))

    def to(self, device: torch.device | str) -> PriorGrid:
        """The grid on ``device``."""
        return grid_from_levels(self.boxes.to(device), self.strides.to(device), [
            (lv.height, lv.width, lv.anchors, lv.stride, lv.offset, lv.anchor_sizes) for lv in self.levels])


def grid_from_levels(boxes: Tensor, strides: Tensor,
                     levels: Sequence[tuple[int, int, int, float, float, Tensor]]) -> PriorGrid:
    """A :class:`PriorGrid` of ``boxes (N, 4)`` laid out level after level as ``(H, W, A, stride, offset,
    anchor_sizes (A, 2))`` say; the column / row centres are read from the boxes themselves."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2  # (N, 2)
    out, start = [], 0
    for h, w, a, stride, offset, sizes in levels:
        n = h * w * a
        c = centres[start:start + n]
        cells = c.view(h, w, a, 2)  # (H*W*A, 2) -> (H, W, A, 2)
        xs = cells[0, :, 0, 0].contiguous() if h else c.new_zeros(w)  # (W,)
        ys = cells[:, 0, 0, 1].contiguous() if w else c.new_zeros(h)  # (H,)
        shared = bool((cells[..., 0] == xs[None, :, None]).all() & (cells[..., 1] == ys[:, None, None]).all())
        box = boxes[start:start + n]
        reach = torch.maximum(c - box[:, :2], box[:, 2:] - c).amax(0) if n else c.new_zeros(2)  # (2,)
        out.append(GridLevel(start=start, height=h, width=w, anchors=a, stride=float(stride), offset=float(offset),
                             anchor_sizes=sizes.to(boxes.device), xs=xs, ys=ys,
                             extent=(float(reach[0]), float(reach[1])), shared_centres=shared))
        start += n
    if start != boxes.shape[0]:
        raise ValueError(f"the levels hold {start} priors but boxes has {boxes.shape[0]}")
    return PriorGrid(boxes=boxes, strides=strides, levels=tuple(out))


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


def check_offset(offset: float) -> float:
    """``offset`` as a float when it is in ``[0, 1)`` cells; ValueError naming it otherwise."""
    value = float(offset)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"offset must be in [0, 1) cells from a cell's top-left corner (0.5: its centre), "
                         f"got {offset!r}")
    return value


def cell_centres(height: int, width: int, stride: float, device: torch.device | str,
                 offset: float = CELL_OFFSET) -> Tensor:
    """Prior points of a ``height x width`` grid of cells of side ``stride``, ``offset`` cells from each
    cell's top-left corner (0.5: the cell centres).

    Returns:
        ``Tensor[H*W, 2]`` fp32 (cx, cy) = ``((x + offset) * stride, (y + offset) * stride)``, row-major
        (y outer, x inner).
    """
    ys = (torch.arange(height, device=device, dtype=torch.float32) + offset) * stride
    xs = (torch.arange(width, device=device, dtype=torch.float32) + offset) * stride
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")  # (H, W) each
    return torch.stack([cx, cy], dim=-1).reshape(-1, 2)  # (H, W, 2) -> (H*W, 2)


class _GridPriorGenerator:
    """Shared caching and concatenation; subclasses give each level's per-location box sizes.

    ``offset``: where the priors sit in their cell, in cells from its top-left corner (0.5: the centre).
    """

    def __init__(self, strides: Sequence[float], offset: float = CELL_OFFSET) -> None:
        self.strides = _check_strides(strides)
        self.offset = check_offset(offset)
        self._cache: dict[tuple[tuple[tuple[int, int], ...], str], PriorGrid] = {}

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
            A :class:`PriorGrid`: ``boxes Tensor[N, 4]`` xyxy fp32, ``strides Tensor[N]`` fp32 and the
            levels (``num_level_priors``: ``H*W*A`` per level, ``N = sum(num_level_priors)``).
        """
        sizes = _check_featmap_sizes(featmap_sizes, self.num_levels)
        key = (tuple(sizes), str(torch.device(device)))
        if key not in self._cache:
            self._cache[key] = self._build(sizes, torch.device(device))
        return self._cache[key]

    def _build(self, sizes: list[tuple[int, int]], device: torch.device) -> PriorGrid:
        boxes, strides, levels = [], [], []
        for level, ((h, w), stride) in enumerate(zip(sizes, self.strides)):
            centres = cell_centres(h, w, stride, device, self.offset)  # (H*W, 2)
            anchor_sizes = self.level_sizes(level).to(device)  # (A, 2)
            half = anchor_sizes / 2
            lt = centres[:, None, :] - half[None]  # (H*W, A, 2)
            rb = centres[:, None, :] + half[None]  # (H*W, A, 2)
            level_boxes = torch.cat([lt, rb], dim=-1).reshape(-1, 4)  # (H*W, A, 4) -> (H*W*A, 4)
            boxes.append(level_boxes)
            strides.append(torch.full((level_boxes.shape[0],), stride, device=device))
            levels.append((h, w, anchor_sizes.shape[0], stride, self.offset, anchor_sizes))
        return grid_from_levels(torch.cat(boxes), torch.cat(strides), levels)


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

    The point of cell ``(y, x)`` is ``((x + offset) * stride, (y + offset) * stride)``: ``offset=0.5``
    (the default, every detkit head) puts it on the cell centre, ``offset=0.0`` on the cell's top-left
    corner as RTMDet's ``MlvlPointGenerator(offset=0)`` does. The assigners' candidate windows and the
    distance coders read the points from the boxes, so any offset is honoured there; the cell-relative
    coders (``YOLOCoder``, ``YOLOXCoder``) recover a cell index as ``(cx - stride / 2) / stride``, which
    assumes 0.5 (at another offset they stay each other's inverse, shifted by ``0.5 - offset`` cells).

    Args:
        strides: the stride of each level.
        scale: side of the square, in strides.
        offset: the point's position in its cell, in cells from the top-left corner, in ``[0, 1)``.

    Raises:
        ValueError: a non-positive ``scale``, an ``offset`` outside ``[0, 1)``, bad ``strides``.
    """

    def __init__(self, strides: Sequence[float] = (8, 16, 32), scale: float = 8.0,
                 offset: float = CELL_OFFSET) -> None:
        super().__init__(strides, offset)
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
        return f"PointGenerator(strides={self.strides}, scale={self.scale}, offset={self.offset})"
