"""The candidate-sparse form of dynamic-k matching (SimOTA, dynamic soft labels): the dense form's
result from each GT's listed pairs, with full rows or columns only where those cannot decide.

In the dense form every GT is costed against every candidate of its image (priors inside *any*
GT's region), its dynamic k sums its best IoUs over all of them, and a prior taken by several
GTs goes to the lowest cost among *all* GTs. Here:

1. Candidates (``fg``) from each GT's candidate regions, by grid arithmetic.
2. Each GT's listed pairs: the candidates whose centre lies in its region widened by the reach of
   their level's predicted boxes (``T``, chosen per level to list the fewest pairs), plus the
   "wide" candidates whose predicted box reaches further, paired with every GT of their image.
   Every pair with IoU > 0 is listed, so dynamic k is exact; every unlisted pair has IoU 0 and a
   cost no lower than the rule's bound (:meth:`DynamicKAssigner._unlisted_bound`).
3. A GT takes its k lowest listed costs when the k-th is below that bound (and, for
   ``torch.sort``'s tie order, not tied with the next); any other GT is redone on its full row of
   N priors by the dense functions.
4. A prior taken by several GTs is costed against every GT of its image (its full column).
"""

from __future__ import annotations

import torch
from torch import Tensor

from detkit.assigners.candidates import (
    GridLevel,
    PriorLayout,
    level_window_counts,
    row_chunks,
    segment_ranks,
    valid_rows,
    window_pairs,
)
from detkit.assigners.chunking import gt_chunks
from detkit.assigners.dynamic_k import DynamicKAssigner, PairTables, take_lowest_cost

__all__ = ["sparse_match"]

REACH_QUANTILES = (0.5, 0.75, 0.9, 0.97, 0.99, 1.0)  # reach thresholds tried per level (step 2)


def sparse_match(rule: DynamicKAssigner, t: PairTables, layout: PriorLayout) -> Tensor:
    """``Tensor[B, N]`` long: the dense form's matched GT of each prior (-1 where none)."""
    b, m, n = t.batch, t.num_gts, t.num_priors
    device = t.centres.device
    chunks = gt_chunks(m, rule.max_gt_chunk)
    t.fg = torch.zeros(b * n, dtype=torch.bool, device=device)
    for chunk in chunks:  # step 1 needs every GT before any cost
        image, slot = valid_rows(t.valid.view(b, m), chunk)
        row, prior = window_pairs(layout, rule._candidate_regions(layout, t.gt_boxes[image * m + slot]))
        hit = rule._candidate_test(t, image[row] * m + slot[row], prior)
        t.fg[image[row][hit] * n + prior[hit]] = True
    usable = torch.ones_like(t.fg) if rule.all_priors_usable else t.fg
    reach = _reach(t)  # (B*N,)
    matches = torch.zeros(b * n, dtype=torch.long, device=device)
    last = torch.full((b * n,), -1, dtype=torch.long, device=device)
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
        k = _dynamic_ks(row, iou, gt_row.shape[0], min(rule.candidate_topk, n))  # (G,)
        taken, decided = _take(rule, row, cost, k, rule._unlisted_bound(t, gt_row))
        row, prior = row[taken], prior[taken]
        redo = (~decided).nonzero().flatten()
        if redo.numel():
            row_f, prior_f = _full_rows(rule, t, image, gt_row, k, redo)
            row, prior = torch.cat([row, row_f]), torch.cat([prior, prior_f])
        flat = image[row] * n + prior
        matches.index_add_(0, flat, torch.ones_like(flat))
        last.scatter_reduce_(0, flat, slot[row], "amax")  # chunks ascend: the last GT that took it
    gt_index = torch.where(matches > 1, _cheapest_gt(rule, t, (matches > 1).nonzero().flatten()), last)
    return torch.where(matches > 0, gt_index, torch.full_like(gt_index, -1)).view(b, n)


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
    """Step 2: ``(row (P,), prior (P,))``, ordered by (GT, prior): the usable pairs of the GTs
    ``gt_row`` whose prior centre lies in the GT's candidate region or its box widened by the level's
    reach threshold, and every usable pair of a wide prediction. Holds every usable pair with IoU > 0."""
    n = t.num_priors
    boxes = t.gt_boxes[gt_row]  # (G, 4)
    regions = rule._candidate_regions(layout, boxes)  # (G, L, 4)
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
    row, prior = _select(usable[flat] & ~wide[flat], row, prior)
    wide_img, wide_prior = wide.view(t.batch, n).nonzero(as_tuple=True)
    if wide_img.numel() == 0:
        return row, prior
    first = torch.cumsum(per_image, 0) - per_image  # (B,) first row of each image (rows ascend by image)
    counts = per_image[wide_img]
    owner = torch.repeat_interleave(torch.arange(wide_img.shape[0], device=row.device), counts)
    offset = torch.arange(owner.shape[0], device=row.device) - (torch.cumsum(counts, 0) - counts)[owner]
    wide_row, wide_prior = first[wide_img][owner] + offset, wide_prior[owner]
    order = torch.argsort(wide_row * n + wide_prior)
    return _merge_sorted(row, prior, wide_row[order], wide_prior[order], n)


def _merge_sorted(row_a: Tensor, prior_a: Tensor, row_b: Tensor, prior_b: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Two lists of distinct pairs, each ordered by (row, prior), merged into one ordered list."""
    key_a, key_b = row_a * n + prior_a, row_b * n + prior_b
    at_a = torch.arange(key_a.shape[0], device=key_a.device) + torch.searchsorted(key_b, key_a)
    at_b = torch.arange(key_b.shape[0], device=key_b.device) + torch.searchsorted(key_a, key_b)
    row, prior = torch.empty(2, key_a.shape[0] + key_b.shape[0], dtype=torch.long, device=key_a.device)
    row[at_a], row[at_b], prior[at_a], prior[at_b] = row_a, row_b, prior_a, prior_b
    return row, prior


def _choose_reach(level: GridLevel, regions: Tensor, boxes: Tensor, reach: Tensor, gts_of_image: Tensor) -> float:
    """The reach threshold of one level (px) that lists the fewest pairs: predictions reaching
    further are wide (paired with every GT of their image); the others are found in each GT's box
    widened by the threshold."""
    if reach.numel() == 0:
        return 0.0
    ordered = reach.sort().values
    best, best_cost = float(ordered[-1]), None
    for q in REACH_QUANTILES:
        limit = float(ordered[min(int(q * ordered.shape[0]), ordered.shape[0] - 1)])
        grown = torch.cat([torch.minimum(regions[:, :2], boxes[:, :2] - limit),
                           torch.maximum(regions[:, 2:], boxes[:, 2:] + limit)], 1)
        cost = float(level_window_counts(level, grown).sum()) + float(gts_of_image[reach > limit].sum())
        if best_cost is None or cost < best_cost:
            best, best_cost = limit, cost
    return best


def _dynamic_ks(row: Tensor, iou: Tensor, num_rows: int, k: int) -> Tensor:
    """``Tensor[G]`` int: ``max(1, int(sum of each GT's k largest IoUs))``, unlisted IoUs being 0; the
    sum runs over the values in the dense form's order (descending, zeros last)."""
    rank = segment_ranks(row, iou, num_rows, descending=True)
    top = iou.new_zeros(num_rows, k)
    first = rank < k
    top[row[first], rank[first]] = iou[first]
    return top.sum(-1).int().clamp(min=1)


def _take(rule: DynamicKAssigner, row: Tensor, cost: Tensor, k: Tensor, bound: Tensor) -> tuple[Tensor, Tensor]:
    """Step 3: ``(taken (P,), decided (G,))``: each GT's k lowest listed costs (by cost, then prior
    index), and whether that is what the dense form takes."""
    g = k.shape[0]
    rank = segment_ranks(row, cost, g)
    finite = torch.isfinite(cost)
    taken = (rank < k[row]) & finite
    kth = torch.full((g,), torch.inf, device=cost.device)
    at_k = (rank == k[row] - 1) & finite
    kth[row[at_k]] = cost[at_k]
    decided = kth < bound  # also False when fewer than k are listed (kth stays inf)
    if rule.tie_order != "index":  # torch.sort's order among equal costs: no tie at the cut
        after = rank == k[row]
        tied = torch.zeros(g, dtype=torch.bool, device=cost.device)
        tied[row[after]] = cost[after] == kth[row[after]]
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
    """Step 4: ``Tensor[B*N]`` long, for the priors ``flat`` (``b * N + n``) the GT of lowest cost
    among all GTs of their image (ties: lowest index), from their full columns; -1 elsewhere."""
    b, m, n = t.batch, t.num_gts, t.num_priors
    out = torch.full((b * n,), -1, dtype=torch.long, device=flat.device)
    slots = torch.arange(m, device=flat.device)
    for part in row_chunks(flat, m):
        image, prior = part // n, part % n
        cost, _ = rule._pair_values(t, image[:, None] * m + slots, part[:, None], prior[:, None])  # (K, M)
        out[part] = cost.min(dim=1).indices  # first minimum on ties
    return out
