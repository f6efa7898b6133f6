"""Candidate tables: the (GT, prior) pairs a rule looks at, and the reductions every rule shares.

A rule is written once, over a :class:`CandidateTable` of (GT, prior) pairs listed GT by GT (rows in
(image, GT slot) order), priors ascending within a GT:

* on a :class:`~detkit.anchors.PriorGrid` (what heads pass), :func:`candidate_tables` lists, per GT and
  level, the priors whose centre lies in a region the rule gives (the GT box, its centre region, the box
  widened by a reach), found by the level's grid arithmetic (two ``searchsorted`` per level): a window,
  widened by ``WINDOW_TOL`` strides, so a superset of the rule's exact test, which the rule then applies
  to the listed pairs with the same operations whatever the table (:meth:`CandidateTable.select`);
* on bare ``Tensor[N, 4]`` priors (arbitrary layout), or with no region, the table is **all pairs**:
  every prior of every valid GT. This is also the reference the tests compare the windows with: a rule
  gives the same result bit for bit on ``assign(grid)`` and ``assign(grid.boxes, num_level_priors=...,
  prior_strides=...)``.

Memory: one strategy. A table is built and used in chunks of whole GTs holding at most the pair budget
(``PAIR_BUDGET`` pairs, or :func:`pair_budget`'s), counted before any pair is built; per-GT steps see a
GT's pairs together, per-prior reductions are merged chunk by chunk (:class:`PriorBest`: ties keep the
lowest GT, so the result does not depend on the budget). Windowed tables on grids are small (a GT's
pairs are about its area in cells), so they rarely chunk; all-pairs tables ``G x N`` are what the budget
bounds.

Tie order, defined once (:func:`topk_rows`, :func:`segment_topk`): among equal values the lower prior
index comes first (``ties="index"``). ``ties="torch"`` is the peers' order: the set ``torch.topk`` itself
keeps on the full row of N values (priors off the table hold ``fill``), which Ultralytics' task-aligned
preset needs to keep the same priors; rows whose cut falls inside a tie are ranked on their full row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import torch
from torch import Tensor

from detkit.anchors import GridLevel, PriorGrid
from detkit.assigners.base import GTBatch, Priors

__all__ = [
    "PAIR_BUDGET",
    "CandidateTable",
    "GridLevel",
    "PriorBest",
    "PriorGrid",
    "TieOrder",
    "candidate_tables",
    "first_valid",
    "gt_rows",
    "level_regions",
    "level_window_counts",
    "ordered_bits",
    "paint_open_rects",
    "pair_budget",
    "scatter_best_flat",
    "segment_blocks",
    "segment_ranks",
    "segment_topk",
    "take_rows",
    "topk_rows",
    "window_pairs",
]

TieOrder = Literal["index", "torch"]
Spans = tuple[Tensor, Tensor, Tensor, Tensor]  # a window's first and past-the-last column and row, (G,) each
PAIR_BUDGET = 1 << 23  # pairs of a table chunk (~8.4 M; a rule's per-pair temporaries take ~100-300 bytes each)
_BUDGET: ContextVar[int | None] = ContextVar("detkit_pair_budget", default=None)


@contextmanager
def pair_budget(pairs: int) -> Iterator[None]:
    """Within the block, candidate tables are chunked at ``pairs`` pairs (tests use tiny budgets to check
    that a rule's result does not depend on chunking)."""
    if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 1:
        raise ValueError(f"pair budget must be a positive int, got {pairs!r}")
    token = _BUDGET.set(pairs)
    try:
        yield
    finally:
        _BUDGET.reset(token)


def current_pair_budget() -> int:
    """The pair budget in force (:func:`pair_budget`, else ``PAIR_BUDGET``)."""
    value = _BUDGET.get()
    return PAIR_BUDGET if value is None else value


@dataclass(eq=False)
class CandidateTable:
    """(GT, prior) pairs of some GT rows, GT by GT, priors ascending within a GT.

    Attributes:
        image: ``Tensor[G]`` long, the image of each GT row.
        slot: ``Tensor[G]`` long, the GT's slot in ``M`` (rows ascend in (image, slot)).
        row: ``Tensor[P]`` long in ``[0, G)``, ascending: the GT row of each pair.
        prior: ``Tensor[P]`` long in ``[0, N)``, ascending within a row.
        num_gts: M (GT slots per image).
        num_priors: N.

    Derived ``Tensor[P]`` long columns (computed once): :attr:`gt_index` (``image * M + slot``, a row of
    ``gt_boxes.flatten(0, 1)``), :attr:`pred_index` (``image * N + prior``, a row of
    ``pred_boxes.flatten(0, 1)`` and the prior's slot in a ``(B, N)`` result), :attr:`owner` (the slot);
    and :attr:`blocks`, the rows' pairs in padded blocks.
    """

    image: Tensor
    slot: Tensor
    row: Tensor
    prior: Tensor
    num_gts: int
    num_priors: int

    @property
    def num_rows(self) -> int:
        """G, the GT rows."""
        return int(self.image.shape[0])

    @property
    def num_pairs(self) -> int:
        """P, the pairs."""
        return int(self.row.shape[0])

    @cached_property
    def pair_image(self) -> Tensor:
        """``Tensor[P]`` long: the image of each pair."""
        return self.image.index_select(0, self.row)

    @cached_property
    def owner(self) -> Tensor:
        """``Tensor[P]`` long: the GT slot (in M) of each pair."""
        return self.slot.index_select(0, self.row)

    @cached_property
    def gt_index(self) -> Tensor:
        """``Tensor[P]`` long: ``image * M + slot``, the pair's GT in a flattened ``(B*M, ...)`` table."""
        return self.pair_image * self.num_gts + self.owner

    @cached_property
    def blocks(self) -> list[tuple[Tensor, Tensor]]:
        """The pairs of each GT row as the rows of padded blocks (:func:`segment_blocks`)."""
        return segment_blocks(self.row, self.num_rows)

    @cached_property
    def pred_index(self) -> Tensor:
        """``Tensor[P]`` long: ``image * N + prior``, the pair's prediction in a flattened ``(B*N, ...)`` table."""
        return self.pair_image * self.num_priors + self.prior

    def select(self, keep: Tensor) -> CandidateTable:
        """The pairs where ``keep (P,)`` bool is True (GT rows unchanged; derived columns carried over)."""
        index = keep.nonzero().flatten()  # once: index_select per column is faster than a mask per column
        out = CandidateTable(image=self.image, slot=self.slot, row=self.row.index_select(0, index),
                             prior=self.prior.index_select(0, index), num_gts=self.num_gts, num_priors=self.num_priors)
        cached: list[str] = [n for n in ("owner", "gt_index", "pred_index") if n in self.__dict__]
        if "pair_image" in self.__dict__ and len(cached) < 3:  # only needed to derive the others
            cached.append("pair_image")
        for name in cached:
            out.__dict__[name] = self.__dict__[name].index_select(0, index)
        return out

    @staticmethod
    def all_pairs(image: Tensor, slot: Tensor, num_gts: int, num_priors: int) -> CandidateTable:
        """Every prior for each GT row (``G * N`` pairs): the table of arbitrary priors and the reference."""
        g, device = int(image.shape[0]), image.device
        row = torch.arange(g, device=device).repeat_interleave(num_priors)  # (G*N,)
        prior = torch.arange(num_priors, device=device).repeat(g)
        return CandidateTable(image=image, slot=slot, row=row, prior=prior, num_gts=num_gts, num_priors=num_priors)

    @staticmethod
    def from_windows(grid: PriorGrid, image: Tensor, slot: Tensor, regions: Tensor, num_gts: int,
                     spans: Sequence[Spans] | None = None) -> CandidateTable:
        """The priors whose centre lies in each GT row's region on their level, ``regions (G, L, 4)`` xyxy
        (widened by ``WINDOW_TOL`` strides: a superset of "strictly inside"; see :func:`window_pairs`)."""
        row, prior = window_pairs(grid, regions, spans)
        return CandidateTable(image=image, slot=slot, row=row, prior=prior, num_gts=num_gts,
                              num_priors=grid.num_priors)


def gt_rows(valid: Tensor) -> tuple[Tensor, Tensor]:
    """``(image, slot)``, ``Tensor[G]`` long each: the valid GTs of ``valid (B, M)``, by image then slot."""
    image, slot = valid.nonzero(as_tuple=True)
    return image, slot


def _chunk_bounds(pairs_per_row: Tensor, budget: int) -> list[tuple[int, int]]:
    """Consecutive row ranges ``[(start, stop), ...]`` holding at most ``budget`` pairs each (at least one row)."""
    g = int(pairs_per_row.shape[0])
    if g == 0:
        return []
    ends = torch.cumsum(pairs_per_row.long(), 0).cpu()  # (G,)
    if int(ends[-1]) <= budget:
        return [(0, g)]
    bounds, start = [], 0
    while start < g:
        base = int(ends[start - 1]) if start else 0
        stop = max(start + 1, int(torch.searchsorted(ends, torch.tensor(base + budget), right=True)))
        bounds.append((start, stop))
        start = stop
    return bounds


def candidate_tables(priors: Priors, gt: GTBatch, regions: Tensor | None = None,
                     rows: tuple[Tensor, Tensor] | None = None) -> Iterator[CandidateTable]:
    """The candidate table of the valid GTs, in chunks of whole GTs of at most the pair budget.

    Args:
        priors: the call's priors (:func:`detkit.assigners.base.prepare`).
        gt: the checked GTs.
        regions: ``Tensor[G, L, 4]`` xyxy per valid GT row (``rows`` order) and level of ``priors.grid``: the
            table lists the priors whose centre lies in it (a window, see :meth:`CandidateTable.from_windows`).
            None, or priors without a grid: all pairs.
        rows: ``(image, slot)`` of the valid GTs if the caller already has them (:func:`gt_rows`).

    Yields:
        :class:`CandidateTable` chunks, rows ascending (image, slot) across chunks; nothing without a valid GT.
    """
    image, slot = gt_rows(gt.valid) if rows is None else rows
    n, m = priors.num_priors, gt.num_gts
    grid = priors.grid if regions is not None else None
    if grid is not None and regions is not None:
        spans = [_spans(lv, regions[:, i]) for i, lv in enumerate(grid.levels)]  # once: counts and pairs
        counts = torch.stack([_span_count(lv, sp) for lv, sp in zip(grid.levels, spans)], 1).sum(1)
    else:
        counts = torch.full((image.shape[0],), n, dtype=torch.long, device=image.device)
    for start, stop in _chunk_bounds(counts, current_pair_budget()):
        part = slice(start, stop)
        if grid is not None and regions is not None:
            yield CandidateTable.from_windows(grid, image[part], slot[part], regions[part], m,
                                              [(x0[part], x1[part], y0[part], y1[part]) for x0, x1, y0, y1 in spans])
        else:
            yield CandidateTable.all_pairs(image[part], slot[part], m, n)


def topk_rows(values: Tensor, k: int, *, largest: bool = True, ties: TieOrder = "index") -> Tensor:
    """Indices of the ``k`` largest (or smallest) values of each row of ``values (..., n)``.

    Args:
        k: at most ``n`` (clamped).
        ties: ``"index"``: the ``k`` first by (value, index), lower index first among equal values, returned
            in that order; ``"torch"``: the set and order ``torch.topk`` gives (the peers').

    Returns:
        ``Tensor[..., k]`` long.
    """
    n = values.shape[-1]
    k = min(k, n)
    if ties == "torch":
        return values.topk(k, dim=-1, largest=largest).indices
    if k == 0:
        return values.new_zeros(*values.shape[:-1], 0, dtype=torch.long)
    vals, idx = values.topk(min(k + 1, n), dim=-1, largest=largest, sorted=True)  # (..., k+1)
    if n > k:
        # the (k+1)-th equal to the k-th: a tie across the cut, which topk settles in no defined order
        tied = vals[..., k] == vals[..., k - 1]
        idx = idx[..., :k]
        if bool(tied.any()):
            idx[tied] = values[tied].sort(dim=-1, stable=True, descending=largest).indices[:, :k]
    idx = idx.sort(dim=-1).values
    order = values.gather(-1, idx).sort(dim=-1, stable=True, descending=largest).indices
    return idx.gather(-1, order)


def segment_topk(table: CandidateTable, key: Tensor, k: int, *, ties: TieOrder = "index",
                 fill: float = 0.0) -> Tensor:
    """Per GT row, the pairs among the ``k`` largest ``key``: ``Tensor[P]`` bool.

    Args:
        table: the pairs.
        key: ``Tensor[P]`` float32, no NaN.
        k: pairs kept per row.
        ties: ``"index"``: the ``k`` first listed pairs by (key descending, prior ascending).
            ``"torch"``: the priors ``torch.topk`` keeps on the row's full N values, where priors off the table
            hold ``fill`` (every listed key must be ``>= fill``); rows decided without a tie at the cut are
            ranked as with ``"index"``, the others rebuilt as full rows (:func:`topk_rows`).
    """
    rank = segment_ranks(table.row, key, table.num_rows, descending=True)  # (P,) by (key, prior index)
    if ties == "index":
        return rank < k
    k = min(k, table.num_priors)
    rows, device = table.num_rows, key.device
    above = key > fill
    count_above = torch.zeros(rows, dtype=torch.long, device=device).index_add_(0, table.row, above.long())
    count_at = torch.zeros(rows, dtype=torch.long, device=device).index_add_(0, table.row, (~above).long())
    at_k, after_k = rank == k - 1, rank == k
    kth = key.new_full((rows,), -torch.inf).index_put_((table.row[at_k],), key[at_k])
    tied = torch.zeros(rows, dtype=torch.bool, device=device)
    tied[table.row[after_k]] = key[after_k] == kth[table.row[after_k]]
    # fewer than k keys above fill: the cut falls among the fill values, listed ones included
    redo = torch.where(count_above < k, count_at > 0, tied)  # (G,)
    kept = (rank < k) & ~redo[table.row]
    if bool(redo.any()):
        again = redo[table.row]
        kept[again] = _full_row_topk(table.row[again], table.prior[again], key[again], table.num_priors, k, fill)
    return kept


def _full_row_topk(row: Tensor, prior: Tensor, key: Tensor, num_priors: int, k: int, fill: float) -> Tensor:
    """``torch.topk`` on the full rows (N values, ``fill`` off the listed pairs) of the few rows listed:
    ``Tensor[P]`` bool, kept. Rows are built at most a pair budget at a time."""
    rows, local = torch.unique_consecutive(row, return_inverse=True)  # rows ascend: pairs come GT by GT
    kept = torch.empty_like(row, dtype=torch.bool)
    step = max(1, current_pair_budget() // max(num_priors, 1))
    for first in range(0, int(rows.shape[0]), step):
        sel = (local >= first) & (local < first + step)
        count = min(step, int(rows.shape[0]) - first)
        full = key.new_full((count, num_priors), fill)
        full[local[sel] - first, prior[sel]] = key[sel]
        flags = torch.zeros_like(full, dtype=torch.bool).scatter_(-1, topk_rows(full, k, ties="torch"), True)
        kept[sel] = flags[local[sel] - first, prior[sel]]
    return kept


def scatter_best_flat(num_slots: int, slot: Tensor, value: Tensor, owner: Tensor, fill: float,
                      lowest: bool = False) -> tuple[Tensor, Tensor]:
    """Per slot, the largest (``lowest``: smallest) ``value`` among the listed pairs and the lowest ``owner``
    reaching it.

    Args:
        num_slots: number of slots (e.g. ``B * N`` priors of a batch).
        slot: ``Tensor[P]`` long, the slot of each pair.
        value: ``Tensor[P]`` float32; pairs to leave out hold ``fill``.
        owner: ``Tensor[P]`` long >= 0 (e.g. the pair's GT slot).
        fill: the value of slots no pair reaches (worse than any real value).

    Returns:
        ``(Tensor[num_slots] best value, Tensor[num_slots] long owner)``; slots with no pair better than
        ``fill`` get ``fill`` and -1.
    """
    best = value.new_full((num_slots,), fill).scatter_reduce(0, slot, value, "amin" if lowest else "amax")
    reaches = (value == best[slot]) & ((value < fill) if lowest else (value > fill))
    none = torch.iinfo(torch.long).max
    low = torch.full((num_slots,), none, dtype=torch.long, device=value.device)
    low = low.scatter_reduce(0, slot, torch.where(reaches, owner, torch.full_like(owner, none)), "amin")
    return best, torch.where(low < none, low, torch.full_like(low, -1))


class PriorBest:
    """A running per-prior best over GTs: for each of the batch's ``B * N`` priors, the best value among the
    pairs merged so far and the GT slot that reached it; ties keep the lowest GT slot (within a merge by
    slot, across merges the earlier, and tables come in ascending GT order), so the result is the same
    whatever the chunks.

    Args:
        batch, num_priors: B and N.
        fill: the value of priors no pair reaches (worse than any real value).
        lowest: smaller is better (costs) instead of larger (IoUs, metrics).
    """

    def __init__(self, batch: int, num_priors: int, device: torch.device, fill: float, lowest: bool = False) -> None:
        self.shape = (batch, num_priors)
        self.fill, self.lowest = float(fill), lowest
        self.value = torch.full((batch * num_priors,), self.fill, dtype=torch.float32, device=device)
        self.index = torch.full((batch * num_priors,), -1, dtype=torch.long, device=device)

    def update(self, pred_index: Tensor, value: Tensor, owner: Tensor) -> None:
        """Merge pairs: ``pred_index (P,)`` the prior's ``b * N + n``, ``value (P,)``, ``owner (P,)`` GT slot."""
        v, i = scatter_best_flat(self.value.shape[0], pred_index, value, owner, self.fill, self.lowest)
        better = v < self.value if self.lowest else v > self.value
        self.value = torch.where(better, v, self.value)
        self.index = torch.where(better, i, self.index)

    def result(self) -> tuple[Tensor, Tensor]:
        """``(value Tensor[B, N] float32, gt Tensor[B, N] long, -1 where no pair)``."""
        return self.value.view(self.shape), self.index.view(self.shape)


WINDOW_TOL = 1e-3  # windows are widened by this many strides: far above rounding, far below a cell


def _spans(level: GridLevel, regions: Tensor) -> Spans:
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
    return _span_count(level, _spans(level, regions))


def _span_count(level: GridLevel, spans: Spans) -> Tensor:
    """``Tensor[G]`` long: priors of ``level`` in the windows ``spans`` (:func:`_spans`)."""
    x0, x1, y0, y1 = spans
    return (x1 - x0).clamp(min=0) * (y1 - y0).clamp(min=0) * level.anchors


def window_pairs(layout: PriorGrid, regions: Tensor, spans: Sequence[Spans] | None = None) -> tuple[Tensor, Tensor]:
    """The (GT, prior) pairs whose prior centre lies in the GT's region on the prior's level.

    Args:
        regions: ``Tensor[G, L, 4]`` xyxy, one region per GT and level (empty regions list nothing).
        spans: the regions' column and row spans per level if the caller has them (``_spans``).

    Returns:
        ``(gt, prior)``, ``Tensor[P]`` long each: GT row in ``[0, G)`` (ascending) and prior index
        (ascending within a GT). A superset of the exact test (see the module docstring).
    """
    g, num_levels = regions.shape[0], len(layout.levels)
    device = regions.device
    if spans is None:
        spans = [_spans(level, regions[:, i]) for i, level in enumerate(layout.levels)]
    if not spans or g == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty
    # Two expansions: windows (G*L, GT-major, then level) into their rows of cells, then rows into pairs. A
    # window row is a run of consecutive priors (its cells' anchors); rows follow each other in y, so priors
    # ascend within a (GT, level) and levels ascend in N: every GT's priors come out ascending.
    x0 = torch.stack([s[0] for s in spans], 1).flatten()  # (G, L) -> (G*L,)
    y0 = torch.stack([s[2] for s in spans], 1).flatten()
    nx = torch.stack([(s[1] - s[0]).clamp(min=0) for s in spans], 1).flatten()
    ny = torch.stack([(s[3] - s[2]).clamp(min=0) for s in spans], 1).flatten()
    per_level = torch.tensor([[lv.anchors, lv.width, lv.start] for lv in layout.levels], device=device)  # (L, 3)
    a, w, start = (per_level[:, i].repeat(g) for i in range(3))  # (G*L,) each
    base, step = start + (y0 * w + x0) * a, w * a  # a window's first prior; priors from one row's start to the next
    ny = torch.where(nx > 0, ny, 0)  # a window without columns has no rows
    window = torch.repeat_interleave(torch.arange(g * num_levels, device=device), ny)  # (R,) window of each row
    r = torch.arange(window.shape[0], device=device) - (torch.cumsum(ny, 0) - ny).index_select(0, window)
    first = base.index_select(0, window) + r * step.index_select(0, window)  # (R,) the row's first prior
    length = (nx * a).index_select(0, window)  # (R,) priors of the row
    ends = torch.cumsum(length, 0)
    total = int(ends[-1]) if ends.numel() else 0
    offset = first - (ends - length)  # prior minus pair position, along each row
    prior = torch.arange(total, device=device).add_(torch.repeat_interleave(offset, length, output_size=total))
    gt = torch.repeat_interleave(window.div(num_levels, rounding_mode="floor"), length, output_size=total)  # (P,)
    return gt, prior


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
    for w in torch.unique(width).tolist():
        if w == 0:
            continue
        rows = (width == w).nonzero().flatten()
        pairs = first[rows, None] + torch.arange(w, device=segment.device)  # (S, W)
        blocks.append((rows, torch.where(pairs < (first + sizes)[rows, None], pairs, -1)))
    return blocks


def paint_open_rects(layout: PriorGrid, image: Tensor, rects: Sequence[Tensor], batch: int) -> Tensor:
    """``Tensor[B*N]`` bool: the priors whose centre lies strictly inside (``lo < c < hi`` on both axes,
    the comparisons done on the same fp32 values) any of the rectangles of their image. Exact only on levels
    whose anchors share their cell's centre bit for bit (``GridLevel.shared_centres``).

    Args:
        image: ``Tensor[G]`` long, the image of each GT row.
        rects: ``Tensor[G, L, 4]`` rectangles per GT row and level (several sets, e.g. a box and a
            centre region).

    The columns with ``lo < x`` start at ``searchsorted(xs, lo, right=True)`` and those with
    ``x < hi`` end before ``searchsorted(xs, hi)``: exact, so no pair is tested; the rectangles are
    painted on a per-image grid of counts (a 2-D difference array) and summed up.
    """
    sets = list(rects)
    image, stacked = image.repeat(len(sets)), torch.cat(sets)  # (R,), (R, L, 4): every set's rows
    out = []
    for i, level in enumerate(layout.levels):
        w, h = level.width, level.height
        r = stacked[:, i]  # (R, 4)
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


TAKE_COLUMNS = 4  # take_rows gathers a 2-D table of at most this many columns column by column


def take_rows(table: Tensor, index: Tensor) -> Tensor:
    """``table[index]`` for one index tensor of any shape (through ``index_select``, which is faster).

    A 2-D table of a few columns (boxes, centres) is gathered column by column into a column-major result (the
    same values; its columns are contiguous): on the tables' indices, runs of ascending priors, that is several
    times faster than gathering rows, and so are the element-wise ops on its columns."""
    flat = index.flatten()
    if table.dim() == 2 and 1 < table.shape[1] <= TAKE_COLUMNS:
        out = table.new_empty(table.shape[1], flat.shape[0])
        for k, column in enumerate(table.unbind(1)):
            torch.index_select(column, 0, flat, out=out[k])
        return out.view(table.shape[1], *index.shape).movedim(0, -1)
    return table.index_select(0, flat).view(*index.shape, *table.shape[1:])


def first_valid(gt: GTBatch) -> Tensor:
    """``Tensor[B]`` long: each image's first valid GT slot (-1 for an image without one)."""
    if gt.num_gts == 0:
        return torch.full((gt.batch_size,), -1, dtype=torch.long, device=gt.valid.device)
    return torch.where(gt.valid.any(1), gt.valid.long().argmax(1), -1)


def level_regions(layout: PriorGrid, boxes: Tensor, margin: Sequence[Tensor | float]) -> Tensor:
    """``Tensor[G, L, 4]``: ``boxes (G, 4)`` widened on every side by ``margin[l]`` (a number or a
    ``Tensor[G]``) on level ``l``."""
    out = []
    for _, m in zip(layout.levels, margin):
        m = m[:, None] if isinstance(m, Tensor) else m  # (G,) -> (G, 1)
        out.append(torch.cat([boxes[:, :2] - m, boxes[:, 2:] + m], 1))
    return torch.stack(out, 1) if out else boxes.new_zeros(boxes.shape[0], 0, 4)
