"""Dynamic-k matching, written once over a table of (GT, prior) pairs: SimOTA (YOLOX) and dynamic soft
labels (RTMDet) are its two cost rules (:class:`DynamicKRule`).

The matching (:func:`dynamic_k_match`):

1. Candidates of an image (``fg``): the priors whose centre lies strictly inside one of the rule's
   candidate rectangles of any valid GT (:meth:`DynamicKRule.candidate_rects`).
2. A table of pairs per GT (grouped by GT, priors ascending): the all-pairs table (every prior;
   the reference, and what bare-tensor priors use), or on a :class:`~detkit.anchors.PriorGrid` the
   listed table, found by the grid's arithmetic: the usable pairs whose prior centre lies in the GT's
   candidate region or its box widened by the reach of its level's predicted boxes, plus the "wide"
   predictions that reach further, paired with every GT of their image; a pair is kept when its
   predicted box overlaps the GT or the rule says it must be listed (:meth:`DynamicKRule.must_list`).
   Every usable pair with IoU > 0 is listed, so dynamic k is exact; an unlisted pair has IoU 0 and
   costs at least the rule's floor (:meth:`DynamicKRule.cost_floor`).
3. Per pair, the rule's IoU and cost; per GT, ``k = max(1, int(sum of its candidate_topk largest
   IoUs))``, and the GT takes its k lowest costs (pairs of infinite cost never; equal costs in the
   rule's ``tie_order``). On a listed table a GT whose k-th cost is not below its floor (or, in
   ``torch.sort``'s order, is tied with the next) is decided on its all-pairs row instead.
4. A prior taken by several GTs goes to the GT of lowest cost among *all* GTs of its image (ties:
   lowest GT index): the cheapest listed pair when it is below every GT's floor, else found on the
   prior's all-pairs column.

The all-pairs table decides every step by itself (its floor is ``inf``), so the listed table gives the
all-pairs result bit for bit: per-pair values are computed element by element with the same
operations, per-GT steps rank by ``(value, prior)`` (:func:`~detkit.assigners.candidates.topk_rows` on a
table's rows, whose pairs are in prior order), and per-prior reductions keep the lowest GT on ties
(:class:`~detkit.assigners.candidates.PriorBest`).
Memory: the tables come in chunks of whole GTs within the pair budget
(:func:`~detkit.assigners.candidates.candidate_tables`); wide pairs are added to a chunk's listed rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from detkit.anchors import GridLevel, PriorGrid
from detkit.assigners.base import (
    AssignResult,
    GTBatch,
    Priors,
    assigned_boxes,
    check_predictions,
    make_result,
    prepare,
)
from detkit.assigners.candidates import (
    CandidateTable,
    PriorBest,
    candidate_tables,
    current_pair_budget,
    gt_rows,
    level_window_counts,
    paint_open_rects,
    take_rows,
    topk_rows,
)
from detkit.assigners.threads import limit_assign_threads
from detkit.boxes import aligned_iou

__all__ = ["DynamicKAssigner", "DynamicKRule", "PairInputs", "dynamic_k_match", "inside_any"]

REACH_QUANTILES = (0.5, 0.75, 0.9, 0.97, 0.99, 1.0)  # reach thresholds tried per level (step 2)
REACH_SAMPLE = 8192  # predictions per level the thresholds' costs are estimated on
# What a wide pair costs next to a window pair when a reach threshold is chosen: wide pairs are tested as a
# broadcast (GT rows x wide predictions) block, window pairs are generated and gathered one by one (measured
# on benchmarks/dense_scene.py: 0.25 lists 2.6 M + 3.6 M pairs instead of 3.5 M + 1.2 M, 10-12% less CPU).
WIDE_PAIR_COST = 0.25


@dataclass
class PairInputs:
    """What a rule's per-pair values are gathered from: GT ``b * M + m``, prediction ``b * N + n``, prior ``n``.

    Attributes:
        centres: ``Tensor[N, 2]`` prior centres ``(x1 + x2) / 2``.
        strides: ``Tensor[N]`` stride of each prior.
        pred_boxes: ``Tensor[B*N, 4]`` predicted xyxy boxes.
        gt_boxes: ``Tensor[B*M, 4]`` xyxy.
        labels: ``Tensor[B*M]`` long, clamped to ``[0, C)``.
        valid: ``Tensor[B*M]`` bool.
        scores: ``"raw"``: the ``Tensor[B*N, C]`` probabilities; after step 1 also the rule's own
            per-prediction terms (:meth:`DynamicKRule.score_terms`).
        batch, num_gts, num_classes: ``B``, ``M``, ``C``.
        fg: ``Tensor[B*N]`` bool, step 1's candidates of each image, once known.
    """

    centres: Tensor
    strides: Tensor
    pred_boxes: Tensor
    gt_boxes: Tensor
    labels: Tensor
    valid: Tensor
    scores: dict[str, Tensor]
    batch: int
    num_gts: int
    num_classes: int
    fg: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))

    @property
    def num_priors(self) -> int:
        """N."""
        return int(self.centres.shape[0])


class DynamicKRule:
    """The cost rule of a dynamic-k assigner: what :func:`dynamic_k_match` asks of SimOTA and dynamic soft
    labels. Every per-pair method takes index tensors of one broadcast shape (``gt`` into ``B*M``,
    ``pred`` into ``B*N``, ``prior`` into ``N``) and returns values of that shape.

    Attributes:
        candidate_topk: IoUs summed for the dynamic k, also its upper bound.
        tie_order: equal costs taken in prior-index order (``"index"``) or in ``torch.sort``'s order
            on the all-pairs row (``"torch_sort"``, mmyolo's batched assigner).
        all_priors_usable: every prior is costed (mmyolo's batched DSL), not only the candidates.
        lists_centres_in_box: :meth:`must_list` also holds pairs whose prior centre lies inside the GT's box.
    """

    candidate_topk: int
    tie_order: str = "index"
    all_priors_usable: bool = False
    lists_centres_in_box: bool = False  # must_list holds pairs whose prior centre is in the GT's box at IoU 0

    def candidate_rects(self, boxes: Tensor, strides: Tensor) -> list[Tensor]:
        """Step 1 as rectangles: a prior of stride ``s`` is a candidate of a GT when its centre lies
        strictly inside (``lo < c < hi``) one of the GT's rectangles for ``s``.

        Args:
            boxes: ``Tensor[..., 4]`` GT boxes.
            strides: ``Tensor[...]`` strides, broadcast with ``boxes`` (``(G, 1, 4)`` and ``(1, L)`` for a grid's
                levels; ``(P, 4)`` and ``(P,)`` for pairs).

        Returns:
            ``[Tensor[..., 4], ...]`` xyxy rectangles of the broadcast shape, one per test the rule ORs.
        """
        raise NotImplementedError

    def score_terms(self, scores: Tensor, fg: Tensor) -> dict[str, Tensor]:
        """The rule's per-prediction terms from ``scores (B*N, C)``, computed on the candidate rows ``fg (B*N,)``."""
        raise NotImplementedError

    def pair_iou(self, x: PairInputs, gt: Tensor, pred: Tensor) -> Tensor:
        """IoU of the predicted box with the GT; 0 for pairs that are not usable."""
        raise NotImplementedError

    def pair_cost(self, x: PairInputs, gt: Tensor, pred: Tensor, prior: Tensor, iou: Tensor) -> Tensor:
        """Cost of the pairs given their ``iou``; ``inf`` for pairs that are not usable."""
        raise NotImplementedError

    def must_list(self, x: PairInputs, gt: Tensor, prior: Tensor, iou: Tensor) -> Tensor:
        """Bool per pair: a pair a listed table must hold although its IoU may be 0 (default: IoU > 0)."""
        return iou > 0

    def cost_floor(self, x: PairInputs, gt: Tensor) -> Tensor:
        """``Tensor[G]``: no usable pair of GT ``gt (G,)`` that :meth:`must_list` rejects costs less."""
        raise NotImplementedError


class DynamicKAssigner(DynamicKRule):
    """``assign`` of the dynamic-k rules (the :class:`~detkit.assigners.Assigner` protocol): checks the
    inputs, runs :func:`dynamic_k_match` and builds the result (``iou``: the predicted box's, and
    ``score_target`` the same where the subclass sets ``score_target = True``)."""

    uses_predictions: bool = True  # needs pred_scores (B, N, C) from the loss pipeline
    score_target: bool = False

    @limit_assign_threads
    def assign(self, priors: PriorGrid | Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor, *,
               num_level_priors: Sequence[int] | None = None, prior_strides: Tensor | None = None,
               pred_boxes: Tensor | None = None, pred_scores: Tensor | None = None) -> AssignResult:
        """Assign ``priors`` to the padded GTs ``gt_boxes (B, M, 4)`` (see :class:`~detkit.assigners.Assigner`).

        Needs strides (a grid's, or ``prior_strides (N,)``), ``pred_boxes (B, N, 4)`` and ``pred_scores (B, N, C)``
        (probabilities). Returns an :class:`~detkit.assigners.AssignResult` of ``Tensor[B, N]`` fields.
        """
        who = type(self).__name__
        p, gt = prepare(priors, gt_boxes, gt_labels, gt_mask, num_level_priors=num_level_priors,
                        prior_strides=prior_strides)
        b, n = gt.batch_size, p.num_priors
        strides = p.strides_for(who)
        boxes, scores = check_predictions(pred_boxes, pred_scores, b, n, gt, who)
        x = PairInputs(centres=p.centres, strides=strides, pred_boxes=boxes.flatten(0, 1),
                       gt_boxes=gt.boxes.flatten(0, 1), labels=gt.labels.flatten().clamp(0, scores.shape[-1] - 1),
                       valid=gt.valid.flatten(), scores={"raw": scores.flatten(0, 1)}, batch=b, num_gts=gt.num_gts,
                       num_classes=scores.shape[-1])
        gt_index = dynamic_k_match(self, x, p, gt)
        iou = aligned_iou(boxes, assigned_boxes(gt, gt_index))  # (B, N)
        return make_result(gt_index, iou, gt, **({"score_target": iou} if self.score_target else {}))


def _windows_exact(grid: PriorGrid) -> bool:
    """Listed tables need every prior of a cell on its column and row centre (``GridLevel.shared_centres``)."""
    return all(level.shared_centres for level in grid.levels)


def inside_any(rects: Sequence[Tensor], centres: Tensor) -> Tensor:
    """Bool of the broadcast shape without the last axis: ``centres (..., 2)`` strictly inside (``lo < c < hi``)
    one of ``rects`` (each ``Tensor[..., 4]`` xyxy)."""
    hit: Tensor | None = None
    for r in rects:
        x1, y1, x2, y2 = r.unbind(-1)
        h = (centres[..., 0] > x1) & (centres[..., 1] > y1) & (x2 > centres[..., 0]) & (y2 > centres[..., 1])
        hit = h if hit is None else hit | h
    assert hit is not None
    return hit


def candidates(rule: DynamicKRule, x: PairInputs, p: Priors, gt: GTBatch, grid: PriorGrid | None) -> Tensor:
    """Step 1: ``Tensor[B*N]`` bool, the priors inside a candidate rectangle of a valid GT of their image;
    painted on the grid's levels, or tested pair by pair on the all-pairs table."""
    b, n = x.batch, x.num_priors
    image, slot = gt_rows(gt.valid)
    if grid is not None:
        strides = torch.tensor([level.stride for level in grid.levels], device=p.device)
        rects = rule.candidate_rects(gt.boxes[image, slot][:, None, :], strides[None, :])  # (G, L, 4) each
        return paint_open_rects(grid, image, rects, b)
    fg = torch.zeros(b * n, dtype=torch.bool, device=p.device)
    for t in candidate_tables(p, gt, None, (image, slot)):
        hit = inside_any(rule.candidate_rects(take_rows(x.gt_boxes, t.gt_index), take_rows(x.strides, t.prior)),
                         take_rows(x.centres, t.prior))  # (P,)
        fg[t.pred_index[hit]] = True
    return fg


@dataclass
class _Matches:
    """Running state of steps 3-4 per prediction ``b * N + n``: how many GTs took it, the last one, the cheapest
    listed GT (:class:`PriorBest`, ties to the lowest slot) and the lowest floor of an unlisted pair."""

    count: Tensor
    last: Tensor
    cheapest: PriorBest
    floor: float = float("inf")

    def take(self, table: CandidateTable, taken: Tensor) -> None:
        pred, slot = table.pred_index[taken], table.owner[taken]
        self.count.index_add_(0, pred, torch.ones_like(pred))
        self.last.scatter_reduce_(0, pred, slot, "amax")


def dynamic_k_match(rule: DynamicKRule, x: PairInputs, p: Priors, gt: GTBatch, listed: bool = True) -> Tensor:
    """``Tensor[B, N]`` long: the GT each prior is matched to, -1 where none (see the module docstring).

    Args:
        rule: the cost rule.
        x: the batch's inputs (``x.fg`` and the rule's score terms are filled in here).
        p, gt: the checked priors and GTs.
        listed: use listed tables where ``p.grid`` allows (False: all-pairs tables, the reference).
    """
    b, n = x.batch, x.num_priors
    device = p.device
    grid = p.grid if listed and p.grid is not None and _windows_exact(p.grid) else None
    if grid is not None and not bool(x.pred_boxes.isfinite().all()):
        grid = None  # a prediction's reach is unknown: all pairs
    x.fg = candidates(rule, x, p, gt, grid)
    x.scores.update(rule.score_terms(x.scores["raw"], x.fg))
    state = _Matches(count=torch.zeros(b * n, dtype=torch.long, device=device),
                     last=torch.full((b * n,), -1, dtype=torch.long, device=device),
                     cheapest=PriorBest(b, n, device, fill=float("inf"), lowest=True))
    rows = gt_rows(gt.valid)
    if grid is None:
        for table in candidate_tables(p, gt, None, rows):
            _match_table(rule, x, p, gt, state, table, complete=True)
    else:
        for table in _listed_tables(rule, x, p, gt, grid, rows):
            _match_table(rule, x, p, gt, state, table, complete=False)
    cheapest, cheapest_gt = (v.flatten() for v in state.cheapest.result())
    several = state.count > 1
    gt_index = torch.where(several, cheapest_gt, state.last)
    column = (several & ~(cheapest < state.floor)).nonzero().flatten()
    if column.numel():
        gt_index[column] = _cheapest_on_columns(rule, x, column)
    return torch.where(state.count > 0, gt_index, torch.full_like(gt_index, -1)).view(b, n)


def _match_table(rule: DynamicKRule, x: PairInputs, p: Priors, gt: GTBatch, state: _Matches, t: CandidateTable,
                 complete: bool) -> None:
    """Steps 3-4 for the GT rows of table ``t`` (all pairs when ``complete``)."""
    iou = rule.pair_iou(x, t.gt_index, t.pred_index)  # (P,)
    if not complete:
        keep = rule.must_list(x, t.gt_index, t.prior, iou)
        t, iou = t.select(keep), iou[keep]
    cost = rule.pair_cost(x, t.gt_index, t.pred_index, t.prior, iou)
    state.cheapest.update(t.pred_index, cost, t.owner)
    k = _dynamic_ks(t, iou, min(rule.candidate_topk, x.num_priors))  # (G,)
    if complete:
        state.take(t, _take_lowest(rule, t, cost, k)[0])
        return
    bound = rule.cost_floor(x, t.image * x.num_gts + t.slot)  # (G,)
    state.floor = min(state.floor, float(bound.min()))
    taken, decided = _take_lowest(rule, t, cost, k, bound)
    state.take(t, taken & decided[t.row])
    redo = (~decided).nonzero().flatten()
    if redo.numel():  # decided on their all-pairs rows
        for full in candidate_tables(p, gt, None, (t.image[redo], t.slot[redo])):
            full_cost = rule.pair_cost(x, full.gt_index, full.pred_index, full.prior,
                                       rule.pair_iou(x, full.gt_index, full.pred_index))
            part = _row_lookup(t, full)
            state.take(full, _take_lowest(rule, full, full_cost, k[part])[0])


def _row_lookup(t: CandidateTable, sub: CandidateTable) -> Tensor:
    """``Tensor[G']`` long: the row of ``t`` of each row of ``sub`` (a table of some of ``t``'s GT rows)."""
    m = t.num_gts
    key = t.image * m + t.slot  # ascending: rows come in (image, slot) order
    return torch.searchsorted(key, sub.image * m + sub.slot)


def _dynamic_ks(t: CandidateTable, iou: Tensor, k: int) -> Tensor:
    """``Tensor[G]`` int: ``max(1, int(sum of each GT's k largest IoUs))``, unlisted IoUs being 0: the k largest
    summed in descending order, zeros last, as on an all-pairs row (equal values in any order: same sum)."""
    top = iou.new_zeros(t.num_rows, k)
    for rows, pairs in t.blocks:
        values = torch.where(pairs >= 0, take_rows(iou, pairs.clamp(min=0)), 0.0)  # (S, W)
        kk = min(k, values.shape[1])
        top[rows, :kk] = values.topk(kk, dim=1).values
    return top.sum(-1).int().clamp(min=1)


def _take_lowest(rule: DynamicKRule, t: CandidateTable, cost: Tensor, k: Tensor,
                 bound: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Step 3: ``(taken (P,), decided (G,))``: each GT's ``k (G,)`` lowest finite costs and whether they are what
    its all-pairs row takes.

    Equal costs: by prior index (:func:`~detkit.assigners.candidates.topk_rows`, the tables' tie order; a row's
    pairs are in prior order), or with ``tie_order="torch_sort"`` in ``torch.sort``'s order on the all-pairs row
    (mmyolo's batched assigner), which only an all-pairs row gives. ``bound`` None: an all-pairs table, every row
    decided. Else a listed table with ``bound (G,)`` the floor of its unlisted pairs: a row is decided when its
    k-th cost lies below it (fewer than k listed finite costs: undecided) and, in ``torch.sort``'s order, the
    next cost differs."""
    g = t.num_rows
    taken = torch.zeros_like(t.row, dtype=torch.bool)
    decided = torch.full((g,), bound is None, dtype=torch.bool, device=cost.device)
    by_sort = bound is None and rule.tie_order == "torch_sort"
    for rows, pairs in t.blocks:
        values = torch.where(pairs >= 0, take_rows(cost, pairs.clamp(min=0)), torch.inf)  # (S, W), padding last
        kk = min(rule.candidate_topk + 1, values.shape[1])
        order = values.sort(dim=1).indices[:, :kk] if by_sort else topk_rows(values, kk, largest=False)  # (S, kk)
        low = values.gather(1, order)
        need = k[rows].long()[:, None]  # (S, 1)
        pick = (torch.arange(kk, device=cost.device) < need) & torch.isfinite(low)
        taken[pairs.gather(1, order)[pick]] = True
        if bound is not None:
            nxt = torch.cat([low, low.new_full((low.shape[0], 1), torch.inf)], 1)  # a next of inf
            at = (need - 1).clamp(max=kk - 1)
            kth = torch.where(need[:, 0] <= values.shape[1], nxt.gather(1, at)[:, 0], torch.inf)
            ok = kth < bound[rows]
            if rule.tie_order != "index":  # torch.sort's order among equal costs: no tie at the cut
                ok &= nxt.gather(1, at + 1)[:, 0] != kth
            decided[rows] = ok
    return taken, decided


def _cheapest_on_columns(rule: DynamicKRule, x: PairInputs, pred: Tensor) -> Tensor:
    """Step 4 on all-pairs columns: ``Tensor[K]`` long, for the predictions ``pred (K,)`` (``b * N + n``) the GT
    slot of lowest cost among all of their image's M slots (ties: lowest slot)."""
    m, n = x.num_gts, x.num_priors
    out = torch.empty_like(pred)
    step = max(1, current_pair_budget() // max(m, 1))
    for first in range(0, pred.shape[0], step):
        part = pred[first:first + step]  # (K',)
        p = part.repeat_interleave(m)  # (K'*M,) column by column
        gt = (p // n) * m + torch.arange(m, device=pred.device).repeat(part.shape[0])
        cost = rule.pair_cost(x, gt, p, p % n, rule.pair_iou(x, gt, p))
        out[first:first + step] = cost.view(-1, m).min(dim=1).indices  # first minimum on ties
    return out


# The listed table of a grid (step 2) ------------------------------------------------------------------


def _reach(x: PairInputs) -> Tensor:
    """``Tensor[B*N]``: how far each predicted box reaches from its prior's centre (px, either axis)."""
    centres = x.centres.repeat(x.batch, 1)  # (N, 2) -> (B*N, 2)
    return torch.maximum(centres - x.pred_boxes[:, :2], x.pred_boxes[:, 2:] - centres).amax(-1)


def _overlap_or_centre(rule: DynamicKRule, gt_cols: Sequence[Tensor], pred_cols: Sequence[Tensor],
                       centre_cols: Sequence[Tensor]) -> Tensor:
    """Bool per pair, a cheap superset of :meth:`DynamicKRule.must_list`: the predicted box overlaps the GT on
    both axes (IoU > 0 needs that), or (where the rule lists them) the prior's centre lies inside the GT's box.

    Args:
        gt_cols, pred_cols: ``[x1, y1, x2, y2]`` of the pairs' GT and predicted boxes, ``Tensor[...]`` each
            (broadcast; contiguous columns compare several times faster than the strided columns of a box tensor).
        centre_cols: ``[cx, cy]`` of the pairs' prior centres (broadcast with them).
    """
    keep: Tensor | None = None
    for axis in (0, 1):
        lo, hi = gt_cols[axis], gt_cols[axis + 2]
        ok = (pred_cols[axis] < hi).logical_and_(pred_cols[axis + 2] > lo)
        if rule.lists_centres_in_box:
            c = centre_cols[axis]
            ok.logical_or_((c > lo).logical_and_(c < hi))
        keep = ok if keep is None else keep.logical_and_(ok)
    assert keep is not None
    return keep


def _columns(table: Tensor, index: Tensor) -> list[Tensor]:
    """The columns of ``table (R, K)`` at the rows ``index (...)``: ``[Tensor[...], ...]``, K contiguous tensors (a
    gather per column: several times faster than gathering rows of K values)."""
    return [col.index_select(0, index.flatten()).view(index.shape) for col in table.t().contiguous()]


def _listed_tables(rule: DynamicKRule, x: PairInputs, p: Priors, gt: GTBatch, grid: PriorGrid,
                   rows: tuple[Tensor, Tensor]) -> Iterator[CandidateTable]:
    """Step 2: the listed tables of the valid GTs ``rows``: the usable pairs whose prior centre lies in the GT's
    candidate region or its box widened by the level's reach threshold, and every usable pair of a wide
    prediction, that pass :func:`_overlap_or_centre`. They hold every usable pair with IoU > 0."""
    n = x.num_priors
    device = p.device
    image = rows[0]
    usable = torch.ones_like(x.fg) if rule.all_priors_usable else x.fg
    reach = _reach(x)
    boxes = gt.boxes[rows]  # (G, 4)
    strides = torch.tensor([level.stride for level in grid.levels], device=device)
    rects = rule.candidate_rects(boxes[:, None, :], strides[None, :])  # (G, L, 4) each
    regions = torch.cat([torch.stack([r[..., :2] for r in rects]).amin(0),
                         torch.stack([r[..., 2:] for r in rects]).amax(0)], -1)  # (G, L, 4) their bounding box
    per_image = torch.bincount(image, minlength=x.batch)  # (B,) GTs of each image
    wide = torch.zeros_like(usable)
    images = torch.arange(x.batch, device=device)[:, None] * n  # (B, 1)
    for i, level in enumerate(grid.levels):
        flat = (images + torch.arange(level.start, level.start + level.size, device=device)).flatten()
        flat = flat[usable[flat]]  # (B*n_l,) -> the level's usable predictions
        reach_l = reach[flat]
        limit = _choose_reach(level, regions[:, i], boxes, reach_l, per_image[flat // n])
        wide[flat[reach_l > limit]] = True
        regions[:, i, :2] = torch.minimum(regions[:, i, :2], boxes[:, :2] - limit)
        regions[:, i, 2:] = torch.maximum(regions[:, i, 2:], boxes[:, 2:] + limit)
    listable = usable & ~wide  # (B*N,) found in the windows
    wide_prior = _wide_rows(x, wide)  # (B, W) prior or -1
    pred_table, centre_table = x.pred_boxes.t().contiguous(), x.centres.t().contiguous()  # (4, B*N), (2, N)
    w_pred = [col.index_select(0, (images + wide_prior.clamp(min=0)).flatten()).view(wide_prior.shape)
              for col in pred_table]  # [(B, W)] * 4
    w_centre = [col.index_select(0, wide_prior.clamp(min=0).flatten()).view(wide_prior.shape) for col in centre_table]
    for t in candidate_tables(p, gt, regions, rows):
        pred = (t.image * n).index_select(0, t.row).add_(t.prior)  # (P,)
        keep = listable.index_select(0, pred)
        row_gt = x.gt_boxes.index_select(0, t.image * x.num_gts + t.slot)  # (G, 4)
        keep &= _overlap_or_centre(rule, _columns(row_gt, t.row), [col.index_select(0, pred) for col in pred_table],
                                   [col.index_select(0, t.prior) for col in centre_table])
        t.__dict__["pred_index"] = pred  # carried over by select
        t = t.select(keep)
        if wide_prior.shape[1] == 0:
            yield t
            continue
        # Each GT row against the wide predictions of its image, (G, W) at once (broadcast for one image).
        w_prior, w_p, w_c = (wide_prior.expand(t.num_rows, -1), w_pred, w_centre) if x.batch == 1 else (
            wide_prior.index_select(0, t.image), [c.index_select(0, t.image) for c in w_pred],
            [c.index_select(0, t.image) for c in w_centre])
        hit = _overlap_or_centre(rule, [c[:, None] for c in row_gt.t()], w_p, w_c).logical_and_(w_prior >= 0)  # (G, W)
        w_row, w_at = hit.nonzero(as_tuple=True)  # by row, then prior
        row, prior = _merge_rows(t.row, t.prior, w_row, w_prior[w_row, w_at], n)
        yield CandidateTable(image=t.image, slot=t.slot, row=row, prior=prior, num_gts=t.num_gts, num_priors=n)


def _wide_rows(x: PairInputs, wide: Tensor) -> Tensor:
    """``Tensor[B, W]`` long: the wide predictions ``wide (B*N,)`` bool of each image as priors, ascending, padded
    with -1 to the most of an image."""
    wide_img, wide_prior = wide.view(x.batch, x.num_priors).nonzero(as_tuple=True)  # by image, then prior
    count = torch.bincount(wide_img, minlength=x.batch)  # (B,)
    width = int(count.max()) if wide_img.numel() else 0
    at = torch.arange(wide_img.shape[0], device=wide.device) - (torch.cumsum(count, 0) - count).index_select(
        0, wide_img)
    prior = torch.full((x.batch, width), -1, dtype=torch.long, device=wide.device)
    prior[wide_img, at] = wide_prior
    return prior


def _merge_rows(row_a: Tensor, prior_a: Tensor, row_b: Tensor, prior_b: Tensor,
                num_priors: int) -> tuple[Tensor, Tensor]:
    """Two tables, each in (row, prior) order and no pair in both, merged into one in that order."""
    key_a, key_b = row_a * num_priors + prior_a, row_b * num_priors + prior_b
    at_a = torch.arange(key_a.shape[0], device=key_a.device) + torch.searchsorted(key_b, key_a)
    at_b = torch.arange(key_b.shape[0], device=key_b.device) + torch.searchsorted(key_a, key_b)
    row = torch.empty(key_a.shape[0] + key_b.shape[0], dtype=torch.long, device=key_a.device)
    prior = torch.empty_like(row)
    row[at_a], row[at_b], prior[at_a], prior[at_b] = row_a, row_b, prior_a, prior_b
    return row, prior


def _choose_reach(level: GridLevel, regions: Tensor, boxes: Tensor, reach: Tensor, gts_of_image: Tensor) -> float:
    """The reach threshold of one level (px) of the least cost: predictions reaching further are wide (paired with
    every GT of their image, each pair weighing ``WIDE_PAIR_COST``); the others are found in each GT's box widened
    by the threshold.
    Tried: quantiles ``REACH_QUANTILES`` of the reach, estimated on at most ``REACH_SAMPLE`` predictions (the
    choice only decides speed, never the result)."""
    if reach.numel() == 0:
        return 0.0
    step = max(1, reach.shape[0] // REACH_SAMPLE)
    sample, weight = reach[::step], gts_of_image[::step]
    ordered, order = sample.sort()
    at = torch.tensor([min(int(q * sample.shape[0]), sample.shape[0] - 1) for q in REACH_QUANTILES],
                      device=reach.device)
    limits = ordered[at]  # (Q,)
    limits[-1] = reach.max()  # the last: nothing wide
    grow = limits[:, None, None]  # (Q, 1, 1)
    grown = torch.cat([torch.minimum(regions[None, :, :2], boxes[None, :, :2] - grow),
                       torch.maximum(regions[None, :, 2:], boxes[None, :, 2:] + grow)], -1)  # (Q, G, 4)
    listed = level_window_counts(level, grown.flatten(0, 1)).view(limits.shape[0], -1).sum(1)  # (Q,)
    beyond = torch.cumsum(weight[order].flip(0), 0).flip(0) * step  # pairs of the predictions from each rank on
    past = torch.searchsorted(ordered, limits, right=True)  # first rank reaching further than each limit
    wide = torch.where(past < sample.shape[0], beyond[past.clamp(max=sample.shape[0] - 1)], 0)
    return float(limits[(listed + wide * WIDE_PAIR_COST).argmin()])
