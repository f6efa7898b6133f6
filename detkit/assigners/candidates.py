"""Candidate pairs from the priors' grids: the priors a GT can concern, found by each level's grid
arithmetic instead of a test against all N priors.

Priors laid out as ``anchors.grid_priors`` makes them (each level ``H x W`` locations, row-major,
``A`` priors per location sharing its centre) are a :class:`PriorLayout`. Every rule's candidate
test has the form "the prior's centre lies strictly inside a region" (the GT box, its centre
region, the box widened by a prior's or a prediction's reach); the columns and rows of a level
whose centres lie in a region are two ``searchsorted`` calls, and :func:`window_pairs` lists the
(GT, prior) pairs of those windows, GT by GT, priors ascending. A window is a superset: each rule
then applies its own exact test to the listed pairs, with the same operations as its dense form,
so the surviving pairs and their values are the dense ones bit for bit.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from detkit.assigners.base import GTBatch

__all__ = [
    "GridLevel",
    "PriorLayout",
    "first_valid",
    "level_regions",
    "level_window_counts",
    "ordered_bits",
    "paint_open_rects",
    "prior_layout",
    "row_chunks",
    "segment_blocks",
    "segment_ranks",
    "take_rows",
    "valid_rows",
    "window_pairs",
]

WINDOW_TOL = 1e-3  # windows are widened by this many strides: far above rounding, far below a cell
ROW_BUDGET = 1 << 22  # elements of a block of full rows (GT x all priors) built at once


@dataclass
class GridLevel:
    """One level of a prior grid.

    Attributes:
        start: index of the level's first prior.
        width, height, anchors: ``W``, ``H`` and ``A`` (priors per location).
        stride: the level's stride (px).
        xs, ys: ``Tensor[W]`` / ``Tensor[H]`` centre coordinates of the columns / rows, ascending,
            as the assigners compute centres (``(x1 + x2) / 2`` of the prior boxes).
        extent: ``(ex, ey)`` the largest distance from a prior's centre to its box's sides (px).
    """

    start: int
    width: int
    height: int
    anchors: int
    stride: float
    xs: Tensor
    ys: Tensor
    extent: tuple[float, float]

    @property
    def size(self) -> int:
        """Number of priors on the level, ``H * W * A``."""
        return self.width * self.height * self.anchors


@dataclass
class PriorLayout:
    """The levels of ``N`` grid priors; ``centres`` is ``Tensor[N, 2]``."""

    levels: list[GridLevel]
    num_priors: int
    centres: Tensor


_LAYOUTS: dict[tuple, tuple[weakref.ref, weakref.ref | None, PriorLayout | None]] = {}
CACHED_LAYOUTS = 8  # layouts of the last priors seen (a head's prior generator hands out the same tensors)


def prior_layout(priors: Tensor, num_level_priors: Sequence[int] | None,
                 prior_strides: Tensor | None = None) -> PriorLayout | None:
    """The grid layout of ``priors (N, 4)``, or None when they are not laid out as grids (or the
    level counts are unknown, or a level mixes strides): the rules then use their dense form.

    Remembered for the same (unmodified) ``priors`` and ``prior_strides`` tensors."""
    if num_level_priors is None:
        return None
    counts = tuple(int(n) for n in num_level_priors)
    key = (id(priors), priors._version, counts, None if prior_strides is None else (id(prior_strides),
                                                                                    prior_strides._version))
    hit = _LAYOUTS.get(key)
    if hit is not None and hit[0]() is priors and (prior_strides is None or hit[1]() is prior_strides):
        return hit[2]
    layout = _build_layout(priors, counts, prior_strides)
    if len(_LAYOUTS) >= CACHED_LAYOUTS:
        _LAYOUTS.pop(next(iter(_LAYOUTS)))
    _LAYOUTS[key] = (weakref.ref(priors), None if prior_strides is None else weakref.ref(prior_strides), layout)
    return layout


def _build_layout(priors: Tensor, num_level_priors: Sequence[int],
                  prior_strides: Tensor | None) -> PriorLayout | None:
    centres = (priors[:, :2] + priors[:, 2:]) / 2  # (N, 2)
    if sum(num_level_priors) != priors.shape[0] or not bool(centres.isfinite().all()):
        return None
    levels, start = [], 0
    for n_l in (int(n) for n in num_level_priors):
        if n_l:
            stride = None
            if prior_strides is not None:
                s = prior_strides[start:start + n_l]
                if not bool((s == s[0]).all()):
                    return None
                stride = float(s[0])
            level = _grid_level(priors[start:start + n_l], centres[start:start + n_l], start, stride)
            if level is None:
                return None
            levels.append(level)
        start += n_l
    return PriorLayout(levels=levels, num_priors=start, centres=centres)


def _grid_level(boxes: Tensor, centres: Tensor, start: int, stride: float | None) -> GridLevel | None:
    """:class:`GridLevel` of one level's ``boxes (n, 4)`` / ``centres (n, 2)``, or None if not a grid."""
    n = centres.shape[0]
    a = int((centres == centres[0]).all(-1).long().cumprod(0).sum())  # priors of the first location
    if n % a or not bool((centres.view(-1, a, 2) == centres[::a, None]).all()):  # (n, 2) -> (n/A, A, 2)
        return None
    loc = centres[::a]  # (n/A, 2)
    w = int((loc[:, 1] == loc[0, 1]).long().cumprod(0).sum())  # locations of the first row
    if loc.shape[0] % w:
        return None
    grid = loc.view(-1, w, 2)  # (n/A, 2) -> (H, W, 2)
    xs, ys = grid[0, :, 0].contiguous(), grid[:, 0, 1].contiguous()
    if not (bool((grid[..., 0] == xs).all()) and bool((grid[..., 1] == ys[:, None]).all())
            and bool((xs.diff() > 0).all()) and bool((ys.diff() > 0).all())):
        return None
    if stride is None:  # spacing of the grid, for the windows' tolerance only
        stride = float(xs[1] - xs[0]) if w > 1 else float(ys[1] - ys[0]) if grid.shape[0] > 1 else 1.0
    reach = torch.maximum(centres - boxes[:, :2], boxes[:, 2:] - centres).amax(0)  # (2,)
    return GridLevel(start=start, width=w, height=grid.shape[0], anchors=a, stride=stride, xs=xs, ys=ys,
                     extent=(float(reach[0]), float(reach[1])))


def _spans(level: GridLevel, regions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """First and past-the-last column and row whose centres lie in ``regions (G, 4)`` (widened by
    ``WINDOW_TOL`` strides): ``(x0, x1, y0, y1)``, ``Tensor[G]`` long each."""
    tol = WINDOW_TOL * level.stride
    x0 = torch.searchsorted(level.xs, (regions[:, 0] - tol).contiguous())
    x1 = torch.searchsorted(level.xs, (regions[:, 2] + tol).contiguous(), right=True)
    y0 = torch.searchsorted(level.ys, (regions[:, 1] - tol).contiguous())
    y1 = torch.searchsorted(level.ys, (regions[:, 3] + tol).contiguous(), right=True)
    return x0, x1, y0, y1


def level_window_counts(level: GridLevel, regions: Tensor) -> Tensor:
    """``Tensor[G]`` long: priors of ``level`` whose centres lie in each of ``regions (G, 4)``."""
    x0, x1, y0, y1 = _spans(level, regions)
    return (x1 - x0).clamp(min=0) * (y1 - y0).clamp(min=0) * level.anchors


def window_pairs(layout: PriorLayout, regions: Tensor) -> tuple[Tensor, Tensor]:
    """The (GT, prior) pairs whose prior centre lies in the GT's region on the prior's level.

    Args:
        regions: ``Tensor[G, L, 4]`` xyxy, one region per GT and level (empty regions list nothing).

    Returns:
        ``(gt, prior)``, ``Tensor[P]`` long each: GT row in ``[0, G)`` (ascending) and prior index
        (ascending within a GT). A superset of the exact test (see the module docstring).
    """
    g, num_levels = regions.shape[0], len(layout.levels)
    device = regions.device
    spans = [_spans(level, regions[:, i]) for i, level in enumerate(layout.levels)]
    if not spans or g == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty
    # Per (GT, level) window, (G, L) each: priors per window row, priors skipped between two rows,
    # first prior; a window's k-th pair is its prior  first + k + (k // row) * skip.
    x0 = torch.stack([s[0] for s in spans], 1)
    y0 = torch.stack([s[2] for s in spans], 1)
    nx = torch.stack([(s[1] - s[0]).clamp(min=0) for s in spans], 1)
    ny = torch.stack([(s[3] - s[2]).clamp(min=0) for s in spans], 1)
    per_level = torch.tensor([[lv.anchors, lv.width, lv.start] for lv in layout.levels], device=device)  # (L, 3)
    a, w, start = (per_level[:, i].expand(g, num_levels) for i in range(3))
    row = (nx * a).flatten()  # (G, L) -> (G*L,) GT-major, then level
    counts = row * ny.flatten()
    window = torch.repeat_interleave(torch.arange(g * num_levels, device=device), counts)  # (P,)
    k = torch.arange(window.shape[0], device=device) - (torch.cumsum(counts, 0) - counts).index_select(0, window)
    skip = ((w - nx) * a).flatten().index_select(0, window)
    first = (start + (y0 * w + x0) * a).flatten().index_select(0, window)
    prior = k.div(row.index_select(0, window), rounding_mode="floor").mul_(skip).add_(first).add_(k)
    return window.div(num_levels, rounding_mode="floor"), prior


def ordered_bits(x: Tensor) -> Tensor:
    """``Tensor`` long in ``[0, 2**32)`` ordered as the fp32 values ``x`` (no NaN; -0.0 taken as +0.0,
    which it equals): the float's bits with negatives flipped, so integer keys sort like the floats."""
    bits = (x.float() + 0.0).view(torch.int32).long()
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits) + 2**31


def segment_ranks(segment: Tensor, key: Tensor, num_segments: int, descending: bool = False) -> Tensor:
    """Rank of each pair within its segment, ordered by ``key`` then by position (ties: earlier first).

    Args:
        segment: ``Tensor[P]`` long in ``[0, num_segments)`` (any order).
        key: ``Tensor[P]`` float32, no NaN.

    Returns:
        ``Tensor[P]`` long, 0 for the first of each segment.
    """
    bits = ordered_bits(key)  # one stable sort on (segment, key)
    if descending:
        bits = 2**32 - 1 - bits
    order = torch.sort(segment * 2**32 + bits, stable=True).indices
    sizes = torch.bincount(segment, minlength=num_segments)
    first = torch.cumsum(sizes, 0) - sizes
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(order.shape[0], device=order.device) - first[segment[order]]
    return ranks


def segment_blocks(segment: Tensor, num_segments: int) -> list[tuple[Tensor, Tensor]]:
    """The pairs of each segment laid out as the rows of padded blocks: one block when that holds at
    most four times the pairs, else blocks of segments of similar size (widths powers of four).

    Args:
        segment: ``Tensor[P]`` long in ``[0, num_segments)``, ascending (pairs grouped by segment).

    Returns:
        ``[(segments (S,), pairs (S, W)), ...]``: each block's segments and, per row, the indices of its
        pairs in their order (-1 past a segment's end). Empty segments are left out.
    """
    sizes = torch.bincount(segment, minlength=num_segments)
    first = torch.cumsum(sizes, 0) - sizes
    widest = int(sizes.max()) if num_segments else 0
    if num_segments * widest <= 4 * segment.shape[0] + 4096:
        width = torch.where(sizes > 0, widest, 0)
    else:
        width = torch.where(sizes > 1, 4 ** torch.ceil(torch.log2(sizes.clamp(min=1).double()) / 2).long(), sizes)
    blocks = []
    for w in width.unique().tolist():
        if w == 0:
            continue
        rows = (width == w).nonzero().flatten()
        pairs = first[rows, None] + torch.arange(w, device=segment.device)  # (S, W)
        blocks.append((rows, torch.where(pairs < (first + sizes)[rows, None], pairs, -1)))
    return blocks


def paint_open_rects(layout: PriorLayout, image: Tensor, rects: Sequence[Tensor], batch: int) -> Tensor:
    """``Tensor[B*N]`` bool: the priors whose centre lies strictly inside (``lo < c < hi`` on both axes,
    the comparisons done on the same fp32 values) any of the rectangles of their image.

    Args:
        image: ``Tensor[G]`` long, the image of each GT row.
        rects: ``Tensor[G, L, 4]`` rectangles per GT row and level (several sets, e.g. a box and a
            centre region).

    The columns with ``lo < x`` start at ``searchsorted(xs, lo, right=True)`` and those with
    ``x < hi`` end before ``searchsorted(xs, hi)``: exact, so no pair is tested; the rectangles are
    painted on a per-image grid of counts (a 2-D difference array) and summed up.
    """
    sets = list(rects)
    image, rects = image.repeat(len(sets)), torch.cat(sets)  # (R,), (R, L, 4): every set's rows
    out = []
    for i, level in enumerate(layout.levels):
        w, h = level.width, level.height
        r = rects[:, i]  # (R, 4)
        x0 = torch.searchsorted(level.xs, r[:, 0].contiguous(), right=True)
        x1 = torch.searchsorted(level.xs, r[:, 2].contiguous())
        y0 = torch.searchsorted(level.ys, r[:, 1].contiguous(), right=True)
        y1 = torch.searchsorted(level.ys, r[:, 3].contiguous())
        weight = ((x1 > x0) & (y1 > y0)).float()  # empty rectangles paint nothing
        corners = (torch.cat([image] * 4), torch.cat([y0, y0, y1, y1]), torch.cat([x0, x1, x0, x1]))
        paint = torch.zeros(batch, h + 1, w + 1, device=image.device)
        paint.index_put_(corners, torch.cat([weight, -weight, -weight, weight]), accumulate=True)
        covered = paint.cumsum(1).cumsum(2)[:, :h, :w] > 0.5  # (B, H, W)
        out.append(covered.flatten(1).repeat_interleave(level.anchors, dim=1))  # (B, H*W) -> (B, H*W*A)
    return torch.cat(out, 1).flatten() if out else torch.zeros(batch * layout.num_priors, dtype=torch.bool)


def take_rows(table: Tensor, index: Tensor) -> Tensor:
    """``table[index]`` for one index tensor of any shape (through ``index_select``, which is faster)."""
    return table.index_select(0, index.flatten()).view(*index.shape, *table.shape[1:])


def first_valid(gt: GTBatch) -> Tensor:
    """``Tensor[B]`` long: each image's first valid GT slot (-1 for an image without one)."""
    if gt.num_gts == 0:
        return torch.full((gt.batch_size,), -1, dtype=torch.long, device=gt.valid.device)
    return torch.where(gt.valid.any(1), gt.valid.long().argmax(1), -1)


def valid_rows(valid: Tensor, chunk: slice) -> tuple[Tensor, Tensor]:
    """``(image, slot)`` of the valid GTs of a chunk of GT slots, ordered by image then slot.

    Args:
        valid: ``Tensor[B, M]`` bool.

    Returns:
        ``Tensor[G]`` long each; ``slot`` indexes the full M.
    """
    image, slot = valid[:, chunk].nonzero(as_tuple=True)
    return image, slot + chunk.start


def level_regions(layout: PriorLayout, boxes: Tensor, margin: Sequence[Tensor | float]) -> Tensor:
    """``Tensor[G, L, 4]``: ``boxes (G, 4)`` widened on every side by ``margin[l]`` (a number or a
    ``Tensor[G]``) on level ``l``."""
    out = []
    for level, m in zip(layout.levels, margin):
        m = m[:, None] if isinstance(m, Tensor) else m  # (G,) -> (G, 1)
        out.append(torch.cat([boxes[:, :2] - m, boxes[:, 2:] + m], 1))
    return torch.stack(out, 1) if out else boxes.new_zeros(boxes.shape[0], 0, 4)


def row_chunks(rows: Tensor, width: int, budget: int = ROW_BUDGET) -> list[Tensor]:
    """``rows`` split so that each part's full rows (``len(part) x width`` values) hold at most
    ``budget`` elements (at least one row per part)."""
    step = max(1, budget // max(width, 1))
    return [rows[i:i + step] for i in range(0, rows.shape[0], step)]
