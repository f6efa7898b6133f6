"""Dynamic-k matching shared by SimOTA (YOLOX) and dynamic soft labels (RTMDet): each GT takes its
``k`` lowest-cost priors, ``k`` from the sum of its best IoUs, and a prior taken by several GTs
goes to the GT of lowest cost. Chunk-safe: GT chunks are taken one by one and merged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from detkit.assigners.base import (
    AssignResult,
    TwoFormAssigner,
    assigned_boxes,
    check_predictions,
    check_strides,
    empty_state,
    make_result,
    prepare_inputs,
)
from detkit.assigners.candidates import PriorLayout, prior_layout, take_rows
from detkit.assigners.chunking import gt_chunks, merge_best
from detkit.boxes import aligned_iou

__all__ = ["DynamicKAssigner", "DynamicKMatches", "PairTables", "dynamic_ks", "take_lowest_cost"]


def dynamic_ks(iou: Tensor, candidate_topk: int) -> Tensor:
    """``Tensor[B, Mc]`` int: ``max(1, int(sum of each GT's candidate_topk largest IoUs))``.

    Args:
        iou: ``Tensor[B, Mc, N]``; pairs that must not count hold 0.
    """
    k = min(candidate_topk, iou.shape[-1])
    return iou.topk(k, dim=-1).values.sum(-1).int().clamp(min=1)


def take_lowest_cost(cost: Tensor, counts: Tensor, max_k: int, tie_order: str = "index") -> Tensor:
    """Each GT's ``counts`` lowest-cost priors; pairs of infinite cost are never taken.

    Args:
        cost: ``Tensor[B, Mc, N]``.
        counts: ``Tensor[B, Mc]`` int, how many each GT takes (at most ``max_k``).
        max_k: the largest count possible.
        tie_order: ``"index"``: equal costs in prior-index order (never depends on ``torch.topk``'s
            tie order); ``"torch_sort"``: the order of ``torch.sort`` (not stable), as mmyolo's
            batched assigner takes them.

    Returns:
        ``Tensor[B, Mc, N]`` bool, the priors each GT takes.
    """
    k = min(max_k, cost.shape[-1])
    if tie_order == "torch_sort":
        order = cost.sort(dim=-1).indices[..., :k]  # (B, Mc, k)
        low = cost.gather(-1, order)
    else:
        # The k lowest costs, as a set that never depends on topk's tie order ...
        low, order = cost.topk(k, dim=-1, largest=False)  # (B, Mc, k)
        kth = low.amax(dim=-1, keepdim=True)  # (B, Mc, 1); inf when fewer than k candidates (never taken)
        tied = ((cost <= kth).sum(-1) > k) & torch.isfinite(kth[..., 0])  # (B, Mc)
        if bool(tied.any()):
            order[tied] = cost[tied].sort(dim=-1, stable=True).indices[:, :k]
        # ... then ordered by (cost, prior index).
        order = order.sort(dim=-1).values
        low, perm = cost.gather(-1, order).sort(dim=-1, stable=True)
        order = order.gather(-1, perm)
    rank = torch.arange(k, device=cost.device)
    keep = (rank < counts[..., None]) & torch.isfinite(low)  # (B, Mc, k)
    taken = torch.zeros_like(cost, dtype=torch.bool)
    return taken.scatter_(-1, order, keep)


class DynamicKMatches:
    """Running result of dynamic-k matching over GT chunks.

    For each prior: how many GTs took it, the last GT that took it, and the GT of lowest cost
    among *all* GTs (taken or not; ties: lowest GT index), which settles a prior taken by several
    GTs (YOLOX's and RTMDet's ``cost.min`` over the GTs).
    """

    def __init__(self, batch: int, num_priors: int, device: torch.device) -> None:
        self.matches = torch.zeros(batch, num_priors, dtype=torch.long, device=device)
        self.any_gt = torch.full((batch, num_priors), -1, dtype=torch.long, device=device)
        self.min_cost, self.min_gt = empty_state(batch, num_priors, device, float("inf"))

    def add(self, taken: Tensor, cost: Tensor, start: int) -> None:
        """Merge one chunk: ``taken`` and ``cost`` ``Tensor[B, Mc, N]`` of GTs ``start .. start+Mc``."""
        self.matches += taken.sum(dim=1)
        ids = torch.arange(start, start + taken.shape[1], device=taken.device).view(1, -1, 1)  # (Mc,) -> (1, Mc, 1)
        self.any_gt = torch.maximum(self.any_gt, torch.where(taken, ids, torch.full_like(ids, -1)).amax(dim=1))
        c_cost, c_gt = cost.min(dim=1)  # (B, N), first minimum on ties
        self.min_cost, self.min_gt = merge_best(self.min_cost, self.min_gt, c_cost, c_gt + start, lower_is_better=True)

    def gt_index(self) -> Tensor:
        """``Tensor[B, N]`` long: the matched GT of each prior, -1 where no GT took it."""
        gt_index = torch.where(self.matches > 1, self.min_gt, self.any_gt)
        return torch.where(self.matches > 0, gt_index, torch.full_like(gt_index, -1))


@dataclass
class PairTables:
    """Flat tables the per-pair values of a dynamic-k rule are gathered from: GT ``b * M + m``,
    prediction ``b * N + n``, prior ``n``; ``scores`` holds the rule's per-prediction score terms
    (``Tensor[B*N]``, or the raw probabilities ``Tensor[B*N, C]``)."""

    centres: Tensor  # (N, 2)
    strides: Tensor  # (N,)
    pred_boxes: Tensor  # (B*N, 4)
    gt_boxes: Tensor  # (B*M, 4)
    labels: Tensor  # (B*M,) long, clamped to [0, C)
    valid: Tensor  # (B*M,) bool
    scores: dict[str, Tensor]  # "raw": the (B*N, C) probabilities, until step 1 puts the rule's terms beside
    num_classes: int
    batch: int
    num_gts: int
    fg: Tensor | None = None  # (B*N,) bool, step 1's candidates of each image, once known

    @property
    def num_priors(self) -> int:
        return self.centres.shape[0]


class DynamicKAssigner(TwoFormAssigner):
    """What SimOTA and dynamic soft labels share: candidates of an image (``fg``), a cost and an IoU
    for each (GT, candidate) pair, dynamic k from the IoUs, the k lowest costs per GT, conflicts to
    the GT of lowest cost. Subclasses give the per-pair values and candidate tests (the hooks below)
    and set ``candidate_topk``, ``tie_order`` and ``all_priors_usable``.

    The dense form computes every (GT, prior) pair; the candidate-sparse form
    (:func:`detkit.assigners.dynamic_k_sparse.sparse_match`) lists each GT's candidates whose
    predicted box can overlap it, and falls back to a GT's full row (or a prior's full column) only
    where the listed pairs cannot decide what the dense form would.
    """

    candidate_topk: int
    tie_order: str = "index"
    all_priors_usable: bool = False  # every prior a candidate (mmyolo's batched DSL), not only fg
    lists_centres_in_box: bool = False  # some pairs with IoU 0 need listing: those whose prior centre is in the box
    score_target: bool = False  # the result's score_target is its IoU (DSL)

    def _assign(self, priors: Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor, *,
                num_level_priors: Sequence[int] | None, prior_strides: Tensor | None, pred_boxes: Tensor | None,
                pred_scores: Tensor | None, dense: bool) -> AssignResult:
        who = type(self).__name__
        priors, gt = prepare_inputs(priors, gt_boxes, gt_labels, gt_mask)
        b, n = gt.batch_size, priors.shape[0]
        strides = check_strides(prior_strides, n, who)
        pred_boxes, scores = check_predictions(pred_boxes, pred_scores, b, n, gt, who)
        tables = PairTables(
            centres=(priors[:, :2] + priors[:, 2:]) / 2, strides=strides, pred_boxes=pred_boxes.flatten(0, 1),
            gt_boxes=gt.boxes.flatten(0, 1), labels=gt.labels.flatten().clamp(0, scores.shape[-1] - 1),
            valid=gt.valid.flatten(), scores={"raw": scores.flatten(0, 1)}, num_classes=scores.shape[-1],
            batch=b, num_gts=gt.num_gts)
        layout = None
        if not dense and bool(pred_boxes.isfinite().all()):
            layout = prior_layout(priors, num_level_priors, strides)
        if layout is None:
            gt_index = self._dense_match(tables)
        else:
            from detkit.assigners.dynamic_k_sparse import sparse_match  # the sparse form's own module

            gt_index = sparse_match(self, tables, layout)
        iou = aligned_iou(pred_boxes, assigned_boxes(gt, gt_index))  # (B, N)
        return make_result(gt_index, iou, gt, **({"score_target": iou} if self.score_target else {}))

    def _dense_match(self, t: PairTables) -> Tensor:
        """Every step over every (GT, prior) pair, chunk by chunk: ``Tensor[B, N]`` matched GT, -1 if none."""
        b, m, n = t.batch, t.num_gts, t.num_priors
        device = t.centres.device
        image, prior = torch.arange(b, device=device)[:, None, None], torch.arange(n, device=device)  # (B, 1, 1), (N,)
        chunks = gt_chunks(m, self.max_gt_chunk, batch=b, num_priors=n, device=device)
        fg = torch.zeros(b, n, dtype=torch.bool, device=device)
        for chunk in chunks:  # step 1 needs every GT before any cost
            gt_row = image * m + torch.arange(chunk.start, chunk.stop, device=device)[:, None]  # (B, Mc, 1)
            fg |= (self._candidate_test(t, gt_row, prior) & take_rows(t.valid, gt_row)).any(dim=1)
        t.fg = fg.flatten()
        t.scores.update(self._score_tables(t.scores["raw"], t.fg))
        matches = DynamicKMatches(b, n, device)
        for chunk in chunks:
            gt_row = image * m + torch.arange(chunk.start, chunk.stop, device=device)[:, None]
            cost, iou = self._pair_values(t, gt_row, image * n + prior, prior)  # (B, Mc, N) each
            taken = take_lowest_cost(cost, dynamic_ks(iou, self.candidate_topk), self.candidate_topk, self.tie_order)
            matches.add(taken, cost, chunk.start)
        return matches.gt_index()

    # hooks ------------------------------------------------------------------------------------------

    def _score_tables(self, scores: Tensor, fg: Tensor) -> dict[str, Tensor]:
        """The rule's per-prediction score terms from ``scores (B*N, C)``, computed on the candidate rows
        ``fg (B*N,)`` (see :class:`PairTables`)."""
        raise NotImplementedError

    def _candidate_test(self, t: PairTables, gt_row: Tensor, prior: Tensor) -> Tensor:
        """Step 1: bool of the broadcast shape, the prior is a candidate of the image through this GT."""
        raise NotImplementedError

    def _candidate_rects(self, layout: PriorLayout, boxes: Tensor) -> list[Tensor]:
        """Step 1 as rectangles: ``[Tensor[G, L, 4], ...]`` per GT ``boxes (G, 4)`` and level; a prior
        passes :meth:`_candidate_test` exactly when its centre lies strictly inside one of them
        (``lo < c < hi``, compared as that test compares). Every pair whose cost lacks a GT's own
        penalty (SimOTA's "in box and centre") lies in their bounding box."""
        raise NotImplementedError

    def _pair_values(self, t: PairTables, gt_row: Tensor, pred_row: Tensor, prior: Tensor) -> tuple[Tensor, Tensor]:
        """``(cost, iou)`` of the broadcast pairs (GT ``gt_row``, prediction ``pred_row`` of ``prior``)."""
        iou = self._pair_iou(t, gt_row, pred_row)
        return self._pair_cost(t, gt_row, pred_row, prior, iou), iou

    def _pair_iou(self, t: PairTables, gt_row: Tensor, pred_row: Tensor) -> Tensor:
        """IoU of the predicted box with the GT, of the broadcast shape; 0 for pairs that are not usable."""
        raise NotImplementedError

    def _pair_cost(self, t: PairTables, gt_row: Tensor, pred_row: Tensor, prior: Tensor, iou: Tensor) -> Tensor:
        """Cost of the broadcast pairs given their ``iou``; ``inf`` for pairs that are not usable."""
        raise NotImplementedError

    def _must_list(self, t: PairTables, gt_row: Tensor, prior: Tensor, iou: Tensor) -> Tensor:
        """Bool per pair: not covered by :meth:`_unlisted_bound` (IoU > 0, or a cost without a penalty)."""
        return iou > 0

    def _unlisted_bound(self, t: PairTables, gt_row: Tensor) -> Tensor:
        """``Tensor[G]``: no usable pair of GT ``gt_row`` that :meth:`_must_list` rejects costs less."""
        raise NotImplementedError
