"""The candidate-sparse form of dynamic-k matching (SimOTA, dynamic soft labels): the dense form's
result from each GT's listed pairs, with full rows or columns only where those cannot decide.

In the dense form every GT is costed against every candidate of its image (priors inside *any*
GT's region), its dynamic k sums its best IoUs over all of them, and a prior taken by several
GTs goes to the lowest cost among *all* GTs. Here:

1. Candidates (``fg``): each GT's candidate rectangles painted on its image's grid of each level.
2. Each GT's listed pairs: the candidates whose centre lies in its region widened by the reach of
   their level's predicted boxes (``T``, chosen per level to list the fewest pairs), plus the
   "wide" candidates whose predicted box reaches further, paired with every GT of their image;
   kept when the predicted box overlaps the GT (or the cost lacks the GT's own penalty). Every
   pair with IoU > 0 is listed, so dynamic k is exact; every unlisted pair has IoU 0 and a cost no
   lower than the rule's bound (:meth:`DynamicKAssigner._unlisted_bound`).
3. A GT takes its k lowest listed costs when the k-th is below that bound (and, for
   ``torch.sort``'s tie order, not tied with the next); any other GT is redone on its full row of
   N priors by the dense functions.
4. A prior taken by several GTs goes to its lowest listed cost when that is below every GT's bound;
   any other such prior is costed against every GT of its image (its full column).
"""

from __future__ import annotations

import torch
from torch import Tensor

from detkit.assigners.base import empty_state
from detkit.assigners.candidates import (
    GridLevel,
    PriorLayout,
    level_window_counts,
    ordered_bits,
    paint_open_rects,
    row_chunks,
    segment_blocks,
    valid_rows,
    window_pairs,
)
from detkit.assigners.chunking import gt_chunks, merge_best, scatter_max
from detkit.assigners.dynamic_k import DynamicKAssigner, PairTables, take_lowest_cost

__all__ = ["sparse_match"]

REACH_QUANTILES = (0.5, 0.75, 0.9, 0.97, 0.99, 1.0)  # reach thresholds tried per level (step 2)
REACH_SAMPLE = 8192  # predictions per level the thresholds' costs are estimated on


def sparse_match(rule: DynamicKAssigner, t: PairTables, layout: PriorLayout) -> Tensor:
    """``Tensor[B, N]`` long: the dense form's matched GT of each prior (-1 where none)."""
    b, m, n = t.batch, t.num_gts, t.num_priors
    device = t.centres.device
    chunks = gt_chunks(m, rule.max_gt_chunk, batch=b, num_priors=n, device=device)
    t.fg = torch.zeros(b * n, dtype=torch.bool, device=device)
    for chunk in chunks:  # step 1 needs every GT before any cost
        image, slot = valid_rows(t.valid.view(b, m), chunk)
        t.fg |= paint_open_rects(layout, image, rule._candidate_rects(layout, t.gt_boxes[image * m + slot]), b)
    t.scores.update(rule._score_tables(t.scores["raw"], t.fg))
    usable = torch.ones_like(t.fg) if rule.all_priors_usable else t.fg
    reach = _reach(t)  # (B*N,)
    matches = torch.zeros(b * n, dtype=torch.long, device=device)
    last = torch.full((b * n,), -1, dtype=torch.long, device=device)
    cheapest, cheapest_gt = empty_state(1, b * n, device, float("inf"))  # lowest listed cost per prior
    cheapest, cheapest_gt, floor = cheapest[0], cheapest_gt[0], torch.inf
    for chunk in chunks:
        image, slot = valid_rows(t.valid.view(b, m), chunk)
        if image.numel() == 0:
            continue
        gt_row = image * m + slot  # (G,)
        row, prior = _listing(rule, t, layout, image, gt_row, usable, reach)
        pair_gt, pred_row = gt_row[row], image[row] * n + prior
        iou = rule._pair_iou(t, pair_gt, pred_row)  # (P,)
        row, prior, pair_gt, pred_row, iou = _select(rule._must_list(t, pair_gt, prior, iou), row, prior, pair_gt,
                                                     pred_row, iou)
        cost = rule._pair_cost(t, pair_gt, pred_row, prior, iou)
        bound = rule._unlisted_bound(t, gt_row)  # (G,)
        floor = min(floor, float(bound.min()))
        cheapest, cheapest_gt = _merge_cheapest(cheapest, cheapest_gt, pred_row, cost, slot[row])
        k = _dynamic_ks(row, iou, gt_row.shape[0], min(rule.candidate_topk, n))  # (G,)
        taken, decided = _take(rule, row, prior, cost, k, bound)
        row, prior = row[taken], prior[taken]
        redo = (~decided).nonzero().flatten()
        if redo.numel():
            row_f, prior_f = _full_rows(rule, t, image, gt_row, k, redo)
            row, prior = torch.cat([row, row_f]), torch.cat([prior, prior_f])
        flat = image[row] * n + prior
        matches.index_add_(0, flat, torch.ones_like(flat))
        last.scatter_reduce_(0, flat, slot[row], "amax")  # chunks ascend: the last GT that took it
    # Step 4: a prior taken by several GTs goes to its cheapest GT; the listed one when it costs less
    # than any unlisted pair can, else found on the prior's full column.
    several = matches > 1
    column = (several & ~(cheapest < floor)).nonzero().flatten()
    gt_index = torch.where(several, cheapest_gt, last)
    if column.numel():
        gt_index[column] = _cheapest_gt(rule, t, column)
    return torch.where(matches > 0, gt_index, torch.full_like(gt_index, -1)).view(b, n)


def _merge_cheapest(cheapest: Tensor, cheapest_gt: Tensor, pred_row: Tensor, cost: Tensor,
                    slot: Tensor) -> tuple[Tensor, Tensor]:
    """Running lowest listed cost per prediction and its GT (ties: lowest GT index)."""
    neg, gt = scatter_max(cheapest.shape[0], pred_row, -cost, slot, -torch.inf)
    return merge_best(cheapest, cheapest_gt, -neg, gt, lower_is_better=True)


def _sieve(rule: DynamicKAssigner, t: PairTables, gt_row: Tensor, pred_row: Tensor, prior: Tensor) -> Tensor:
    """Bool per pair, a cheap superset of :meth:`DynamicKAssigner._must_list`: the predicted box overlaps
    the GT on both axes (IoU > 0 needs that), or the prior's centre lies inside the GT's box."""
    gt_cols, pred_cols = t.gt_boxes.t().contiguous(), t.pred_boxes.t().contiguous()  # (4, B*M), (4, B*N)
    centre_cols = t.centres.t().contiguous()  # (2, N)
    keep = None
    for axis in (0, 1):
        lo, hi = gt_cols[axis].index_select(0, gt_row), gt_cols[axis + 2].index_select(0, gt_row)
        ok = (pred_cols[axis].index_select(0, pred_row) < hi) & (pred_cols[axis + 2].index_select(0, pred_row) > lo)
        if rule.lists_centres_in_box:
            c = centre_cols[axis].index_select(0, prior)
            ok |= (c > lo) & (c < hi)
        keep = ok if keep is None else keep.logical_and_(ok)
    return keep


def _select(mask: Tensor, *tensors: Tensor) -> list[Tensor]:
    """``[x[mask] for x in tensors]``, the mask turned into indices once."""
    index = mask.nonzero().flatten()
    return [x.index_select(0, index) for x in tensors]


def _reach(t: PairTables) -> Tensor:
    """``Tensor[B*N]``: how far each predicted box reaches from its prior's centre (px, either axis)."""
    centres = t.centres.repeat(t.batch, 1)  # (N, 2) -> (B*N, 2)
    return torch.maximum(centres - t.pred_boxes[:, :2], t.pred_boxes[:, 2:] - centres).amax(-1)


def _listing(rule: DynamicKAssigner, t: PairTables, layout: PriorLayout, image: Tensor, gt_row: Tensor,
             usable: Tensor, reach: Tensor) -> tuple[Tensor, Tensor]:
    """Step 2: ``(row (P,), prior (P,))``, grouped by GT: the usable pairs of the GTs ``gt_row``
    whose prior centre lies in the GT's candidate region or its box widened by the level's reach
    threshold, and every usable pair of a wide prediction, that pass :func:`_sieve`. Holds every
    usable pair with IoU > 0."""
    n = t.num_priors
    boxes = t.gt_boxes[gt_row]  # (G, 4)
    rects = rule._candidate_rects(layout, boxes)
    regions = torch.cat([torch.stack([r[..., :2] for r in rects]).amin(0),
                         torch.stack([r[..., 2:] for r in rects]).amax(0)], -1)  # (G, L, 4) their bounding box
    per_image = torch.bincount(image, minlength=t.batch)  # (B,) GTs of each image in this chunk
    wide = torch.zeros_like(usable)
    images = torch.arange(t.batch, device=usable.device)[:, None] * n  # (B, 1)
    for i, level in enumerate(layout.levels):
        flat = (images + torch.arange(level.start, level.start + level.size, device=usable.device)).flatten()
        flat = flat[usable[flat]]  # (B*n_l,) -> the level's usable predictions
        reach_l = reach[flat]
        limit = _choose_reach(level, regions[:, i], boxes, reach_l, per_image[flat // n])
        wide[flat[reach_l > limit]] = True
        regions[:, i, :2] = torch.minimum(regions[:, i, :2], boxes[:, :2] - limit)
        regions[:, i, 2:] = torch.maximum(regions[:, i, 2:], boxes[:, 2:] + limit)
    row, prior = window_pairs(layout, regions)
    flat = image[row] * n + prior
    keep = usable[flat].logical_and_(~wide[flat]).logical_and_(_sieve(rule, t, gt_row[row], flat, prior))
    row, prior = _select(keep, row, prior)
    wide_img, wide_prior = wide.view(t.batch, n).nonzero(as_tuple=True)  # ordered by image
    if wide_img.numel() == 0:
        return row, prior
    # Each GT row's wide pairs (the wide predictions of its image) after its window pairs.
    wide_count = torch.bincount(wide_img, minlength=t.batch)  # (B,)
    per_row = wide_count[image]  # (G,)
    wide_row = torch.repeat_interleave(torch.arange(gt_row.shape[0], device=row.device), per_row)
    offset = torch.arange(wide_row.shape[0], device=row.device) - (torch.cumsum(per_row, 0) - per_row)[wide_row]
    wide_prior = wide_prior[(torch.cumsum(wide_count, 0) - wide_count)[image[wide_row]] + offset]
    wide_row, wide_prior = _select(_sieve(rule, t, gt_row[wide_row], image[wide_row] * n + wide_prior, wide_prior),
                                   wide_row, wide_prior)
    return _interleave(row, prior, wide_row, wide_prior, gt_row.shape[0])


def _interleave(row_a: Tensor, prior_a: Tensor, row_b: Tensor, prior_b: Tensor, num_rows: int) -> tuple[Tensor, Tensor]:
    """Two lists of pairs, each grouped by row (ascending), as one list grouped by row: each row's
    pairs of ``a`` then its pairs of ``b``."""
    count_a, count_b = torch.bincount(row_a, minlength=num_rows), torch.bincount(row_b, minlength=num_rows)
    start = torch.cumsum(count_a + count_b, 0) - count_a - count_b
    at_a = start[row_a] + torch.arange(row_a.shape[0], device=row_a.device) \
        - (torch.cumsum(count_a, 0) - count_a)[row_a]
    at_b = (start + count_a)[row_b] + torch.arange(row_b.shape[0], device=row_b.device) \
        - (torch.cumsum(count_b, 0) - count_b)[row_b]
    row = torch.empty(row_a.shape[0] + row_b.shape[0], dtype=torch.long, device=row_a.device)
    prior = torch.empty_like(row)
    row[at_a], row[at_b], prior[at_a], prior[at_b] = row_a, row_b, prior_a, prior_b
    return row, prior


def _choose_reach(level: GridLevel, regions: Tensor, boxes: Tensor, reach: Tensor, gts_of_image: Tensor) -> float:
    """The reach threshold of one level (px) that lists the fewest pairs: predictions reaching
    further are wide (paired with every GT of their image); the others are found in each GT's box
    widened by the threshold. Tried: quantiles ``REACH_QUANTILES`` of the reach, estimated on at most
    ``REACH_SAMPLE`` predictions (the choice only decides speed, never the result)."""
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
    return float(limits[(listed + wide).argmin()])


def _dynamic_ks(row: Tensor, iou: Tensor, num_rows: int, k: int) -> Tensor:
    """``Tensor[G]`` int: ``max(1, int(sum of each GT's k largest IoUs))``, unlisted IoUs being 0, summed
    as the dense form sums them (``dynamic_ks``: the k largest in descending order, zeros last)."""
    top = iou.new_zeros(num_rows, k)
    for rows, pairs in segment_blocks(row, num_rows):
        values = torch.where(pairs >= 0, iou[pairs.clamp(min=0)], 0.0)  # (S, W)
        kk = min(k, values.shape[1])
        top[rows, :kk] = values.topk(kk, dim=1).values
    return top.sum(-1).int().clamp(min=1)


def _take(rule: DynamicKAssigner, row: Tensor, prior: Tensor, cost: Tensor, k: Tensor,
          bound: Tensor) -> tuple[Tensor, Tensor]:
    """Step 3: ``(taken (P,), decided (G,))``: each GT's k lowest listed costs, ties to the lower prior
    (``take_lowest_cost``'s order; with ``torch.sort``'s order only untied cuts are decided), and
    whether that is what the dense form takes: the k-th cost is below ``bound`` (no unlisted pair can
    cost less) and, for ``torch.sort``'s order, not equal to the next one."""
    g, n = k.shape[0], int(prior.max()) + 1 if prior.numel() else 1
    taken = torch.zeros_like(row, dtype=torch.bool)
    kth = torch.full((g,), torch.inf, device=cost.device)
    tied = torch.zeros(g, dtype=torch.bool, device=cost.device)
    for rows, pairs in segment_blocks(row, g):
        valid = pairs >= 0
        at = pairs.clamp(min=0)
        values = torch.where(valid, cost[at], torch.inf)  # (S, W)
        kk = min(rule.candidate_topk + 1, values.shape[1])
        low, order = values.topk(kk, dim=1, largest=False)  # (S, kk) ascending; equal costs in any order
        need = k[rows].long()[:, None]
        low = torch.cat([low, low.new_full((low.shape[0], 1), torch.inf)], 1)  # a next of inf
        at_k = (need - 1).clamp(max=kk - 1)
        kth_b = torch.where(need[:, 0] <= values.shape[1], low.gather(1, at_k)[:, 0], torch.inf)
        tie = low.gather(1, at_k + 1)[:, 0] == kth_b  # equal costs across the cut: (cost, prior) decides
        if bool(tie.any()):
            key = ordered_bits(values[tie]) * n + torch.where(valid[tie], prior[at[tie]], n - 1)
            order[tie] = key.topk(kk, dim=1, largest=False).indices
        pick = (torch.arange(kk, device=cost.device) < need) & torch.isfinite(low[:, :kk])  # (S, kk)
        taken[pairs.gather(1, order)[pick]] = True
        kth[rows], tied[rows] = kth_b, tie
    decided = kth < bound  # False too when fewer than k are listed (kth stays inf)
    if rule.tie_order != "index":  # torch.sort's order among equal costs: no tie at the cut
        decided &= ~tied
    return taken & decided[row], decided


def _full_rows(rule: DynamicKAssigner, t: PairTables, image: Tensor, gt_row: Tensor, k: Tensor,
               redo: Tensor) -> tuple[Tensor, Tensor]:
    """Step 3 of the dense form for the GTs ``redo`` (indices into ``gt_row``): ``(row, prior)`` of
    the pairs they take, from their full rows of N costs."""
    n = t.num_priors
    prior = torch.arange(n, device=gt_row.device)
    rows, priors = [], []
    for part in row_chunks(redo, n):
        cost, _ = rule._pair_values(t, gt_row[part, None], image[part, None] * n + prior, prior)  # (F, N)
        taken = take_lowest_cost(cost, k[part], rule.candidate_topk, rule.tie_order)
        f, p = taken.nonzero(as_tuple=True)
        rows.append(part[f])
        priors.append(p)
    return torch.cat(rows), torch.cat(priors)


def _cheapest_gt(rule: DynamicKAssigner, t: PairTables, flat: Tensor) -> Tensor:
    """Step 4 of the dense form: ``Tensor[K]`` long, for the priors ``flat`` (``b * N + n``) the GT of
    lowest cost among all GTs of their image (ties: lowest index), from their full columns."""
    m, n = t.num_gts, t.num_priors
    out = torch.empty_like(flat)
    slots = torch.arange(m, device=flat.device)
    for part in row_chunks(torch.arange(flat.shape[0], device=flat.device), m):
        image, prior = flat[part] // n, flat[part] % n
        cost, _ = rule._pair_values(t, image[:, None] * m + slots, flat[part, None], prior[:, None])  # (K, M)
        out[part] = cost.min(dim=1).indices  # first minimum on ties
    return out
