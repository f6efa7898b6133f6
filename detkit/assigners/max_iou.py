"""Max-IoU assignment (Faster R-CNN / RetinaNet / mmdet's MaxIoUAssigner rule), batched, over a candidate table."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from detkit.anchors import PriorGrid
from detkit.assigners.base import AssignResult, GTBatch, Priors, make_result, prepare
from detkit.assigners.candidates import (
    CandidateTable,
    PriorBest,
    candidate_tables,
    first_valid,
    gt_rows,
    level_regions,
    take_rows,
)
from detkit.assigners.threads import limit_assign_threads
from detkit.boxes import aligned_iou

__all__ = ["MaxIoUAssigner", "level_iou_bounds", "overlap_regions"]

NO_GT_IOU = -1.0  # best IoU of a prior no pair reaches: below any real IoU, so never a maximum

State = tuple[Tensor, Tensor, Tensor, Tensor]  # best IoU, best GT, low-quality IoU, low-quality GT; (B, N) each


def overlap_regions(grid: PriorGrid, boxes: Tensor) -> Tensor:
    """``Tensor[G, L, 4]``: per GT box ``(G, 4)`` and level, where a prior's centre must lie for its box to
    overlap the GT: the box widened by the level's largest prior half-size (its ``extent``)."""
    return level_regions(grid, boxes, [max(level.extent) for level in grid.levels])


class MaxIoUAssigner:
    """Each prior goes to its highest-IoU GT when that IoU is high enough.

    Steps (per image, all images at once), over a candidate table of (GT, prior) pairs
    (:mod:`detkit.assigners.candidates`): on a :class:`~detkit.anchors.PriorGrid`, the pairs whose boxes
    can overlap (prior centre within the GT widened by the level's largest prior half-size,
    :func:`overlap_regions`); on a bare tensor of priors, all pairs. Every pair off the table has IoU 0.

    1. IoU of each listed (prior, valid GT) pair.
    2. Per prior, its best GT: the maximum IoU; ties go to the lowest GT index (like ``torch.max`` over
       every GT), so a prior overlapping no GT has IoU 0 with the image's first valid GT.
    3. Best IoU ``>= pos_iou_thr`` -> positive to that GT; ``< neg_iou_thr`` -> negative; in between
       -> ignored. A prior of an image without valid GTs is negative.
    4. Low-quality matching (``match_low_quality``): each GT whose best IoU over the priors is
       ``> 0`` and ``>= min_pos_iou`` also takes *every* prior that reaches that best IoU, whatever
       step 3 said. When several GTs claim one prior this way, the later GT in the list wins.

    ``iou`` of the result is the IoU with the assigned GT (the GT's best IoU for low-quality matches).
    Needs neither ``num_level_priors`` nor ``prior_strides``.

    Args:
        pos_iou_thr: IoU from which a prior is positive.
        neg_iou_thr: IoU below which a prior is negative (``<= pos_iou_thr``).
        min_pos_iou: least best-IoU a GT needs for low-quality matching.
        match_low_quality: apply step 4 (so every GT with any overlap gets a prior).
    """

    uses_predictions: bool = False  # box-only: the loss pipeline need not compute pred_scores

    def __init__(self, pos_iou_thr: float, neg_iou_thr: float, min_pos_iou: float = 0.0,
                 match_low_quality: bool = True) -> None:
        if not 0.0 <= neg_iou_thr <= pos_iou_thr:
            raise ValueError(f"need 0 <= neg_iou_thr <= pos_iou_thr, got neg_iou_thr={neg_iou_thr}, "
                             f"pos_iou_thr={pos_iou_thr}")
        if min_pos_iou < 0:
            raise ValueError(f"min_pos_iou must be >= 0, got {min_pos_iou}")
        self.pos_iou_thr = float(pos_iou_thr)
        self.neg_iou_thr = float(neg_iou_thr)
        self.min_pos_iou = float(min_pos_iou)
        self.match_low_quality = bool(match_low_quality)

    def __repr__(self) -> str:
        return (f"MaxIoUAssigner(pos_iou_thr={self.pos_iou_thr}, neg_iou_thr={self.neg_iou_thr}, "
                f"min_pos_iou={self.min_pos_iou}, match_low_quality={self.match_low_quality})")

    @limit_assign_threads
    def assign(self, priors: PriorGrid | Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor, *,
               num_level_priors: Sequence[int] | None = None, prior_strides: Tensor | None = None,
               pred_boxes: Tensor | None = None, pred_scores: Tensor | None = None) -> AssignResult:
        """Assign (see :class:`~detkit.assigners.base.Assigner`); ``pred_*`` are not used."""
        p, gt = prepare(priors, gt_boxes, gt_labels, gt_mask, num_level_priors=num_level_priors,
                        prior_strides=prior_strides)
        best_iou, best_gt, lq_iou, lq_gt = self._state(p, gt)
        has_gt = best_gt >= 0
        pos = has_gt & (best_iou >= self.pos_iou_thr)
        neg = ~has_gt | (best_iou < self.neg_iou_thr)
        gt_index = torch.where(pos, best_gt, torch.full_like(best_gt, -1))
        iou_out = torch.where(pos, best_iou, torch.zeros_like(best_iou))
        low_quality = lq_gt >= 0
        gt_index = torch.where(low_quality, lq_gt, gt_index)
        iou_out = torch.where(low_quality, lq_iou, iou_out)
        return make_result(gt_index, iou_out, gt, ignore_mask=~neg)

    def _state(self, p: Priors, gt: GTBatch) -> State:
        """Steps 1, 2 and 4 over the candidate table, chunk by chunk (chunks hold whole GTs).

        On a grid with ``neg_iou_thr > 0``, a GT's pairs on a level whose priors cannot reach ``neg_iou_thr`` with
        it (:func:`level_iou_bounds`) decide nothing in steps 2-3, and none in step 4 once the GT's best IoU on its
        other levels is above their bound: the table lists each GT's levels that can reach the threshold and its
        likeliest level (the highest bound); the few GTs whose best IoU is not above the bound of a level left out
        are taken again on all their levels for step 4."""
        b, n = gt.batch_size, p.num_priors
        best = PriorBest(b, n, p.device, NO_GT_IOU)
        lq = (torch.zeros(b * n, dtype=torch.float32, device=p.device),
              torch.full((b * n,), -1, dtype=torch.long, device=p.device))  # low-quality IoU and GT slot
        image, slot = gt_rows(gt.valid)  # (G,) each
        boxes = gt.boxes[image, slot]  # (G, 4)
        regions = None if p.grid is None else overlap_regions(p.grid, boxes)
        left_out = None  # (G,) the highest IoU bound of a GT's levels left out of the table
        if p.grid is not None and regions is not None and self.neg_iou_thr > 0 and boxes.shape[0]:
            bound = level_iou_bounds(p.grid, boxes)  # (G, L)
            listed = (bound >= self.neg_iou_thr) | (bound == bound.amax(1, keepdim=True))
            left_out = torch.where(listed, -1.0, bound).amax(1)  # -1: nothing left out
            full_regions, regions = regions, torch.where(listed[..., None], regions, regions.new_tensor(EMPTY_REGION))
        start, again = 0, []
        for table in candidate_tables(p, gt, regions, rows=(image, slot)):
            iou = self._pair_iou(p, gt, table)  # (P,)
            best.update(table.pred_index, iou, table.owner)
            if self.match_low_quality:
                complete = None if left_out is None else left_out[start:start + table.num_rows]
                done = self._low_quality(table, iou, lq, complete)
                if done is not None:
                    again.append((~done).nonzero().flatten() + start)
            start += table.num_rows
        redo = torch.cat(again) if again else image.new_zeros(0)
        if redo.numel():  # their best IoU on all levels
            for table in candidate_tables(p, gt, full_regions[redo], rows=(image[redo], slot[redo])):
                self._low_quality(table, self._pair_iou(p, gt, table), lq, None)
        lq_iou, lq_gt = lq
        best_iou, best_gt = best.result()
        # A prior no pair reaches (or reaching IoU 0 only) has IoU 0 with every valid GT: step 2 gives it the
        # image's first valid GT, as a maximum over all GTs does.
        first = first_valid(gt)[:, None].expand(b, n)  # (B,) -> (B, N)
        none = (best_iou <= 0) & (first >= 0)
        best_iou = torch.where(none, torch.zeros_like(best_iou), best_iou)
        best_gt = torch.where(none, first, best_gt)
        return best_iou, best_gt, lq_iou.view(b, n), lq_gt.view(b, n)

    @staticmethod
    def _pair_iou(p: Priors, gt: GTBatch, table: CandidateTable) -> Tensor:
        """``Tensor[P]``: IoU of each listed (GT, prior) pair."""
        pair_boxes = take_rows(gt.boxes[table.image, table.slot], table.row)  # (Gc, 4) -> (P, 4)
        return aligned_iou(pair_boxes, take_rows(p.boxes, table.prior))

    def _low_quality(self, table: CandidateTable, iou: Tensor, lq: tuple[Tensor, Tensor],
                     left_out: Tensor | None) -> Tensor | None:
        """Step 4 for the table's GTs, merged into ``lq`` (IoU and GT slot per prior, in place): of the GTs
        claiming a prior the last (highest slot) wins, whatever the order the tables come in.

        Args:
            left_out: ``Tensor[Gc]`` per GT row the highest IoU bound of its levels left out of the table (None:
                all listed).

        Returns:
            ``Tensor[Gc]`` bool, the rows decided here (their best IoU above ``left_out``); None when all listed.
        """
        lq_iou, lq_gt = lq
        gt_best = iou.new_zeros(table.num_rows).scatter_reduce(0, table.row, iou, "amax")  # (Gc,)
        claims = (gt_best > 0) & (gt_best >= self.min_pos_iou)
        done = None if left_out is None else gt_best > left_out
        if done is not None:
            claims &= done
        hits = claims.index_select(0, table.row).logical_and_(iou == gt_best.index_select(0, table.row))
        at = hits.nonzero().flatten()
        last = torch.full_like(lq_gt, -1).scatter_reduce(0, table.pred_index.index_select(0, at),
                                                         table.row.index_select(0, at), "amax")
        row = last.clamp(min=0)
        claim = table.slot.index_select(0, row)
        win = (last >= 0) & (claim > lq_gt)  # rows ascend with the GT slot within an image
        lq_gt.copy_(torch.where(win, claim, lq_gt))
        lq_iou.copy_(torch.where(win, gt_best.index_select(0, row), lq_iou))
        return done


EMPTY_REGION = (math.inf, math.inf, -math.inf, -math.inf)  # xyxy of a window of no prior


def level_iou_bounds(grid: PriorGrid, boxes: Tensor) -> Tensor:
    """``Tensor[G, L]`` float64: per GT box ``(G, 4)`` and level, a value no IoU of the box with a prior of the level
    reaches (as :func:`~detkit.boxes.aligned_iou` computes it): ``IoU <= inter / max(area, prior area)``, the
    intersection at most ``min(w, widest prior) * min(h, tallest prior)``; widened for fp32 rounding. 0 on an empty
    level."""
    b, prior = boxes.double(), grid.boxes.double()
    w, h = (b[:, 2] - b[:, 0]).clamp(min=0)[:, None], (b[:, 3] - b[:, 1]).clamp(min=0)[:, None]  # (G, 1)
    pw, ph = (prior[:, 2] - prior[:, 0]).clamp(min=0), (prior[:, 3] - prior[:, 1]).clamp(min=0)  # (N,)
    sizes = torch.tensor([level.size for level in grid.levels], device=boxes.device)
    level = torch.repeat_interleave(torch.arange(sizes.shape[0], device=boxes.device), sizes)  # (N,)
    per_level = torch.zeros(3, sizes.shape[0], dtype=torch.float64, device=boxes.device)  # 0 on an empty level
    for row, (value, how) in enumerate(((pw, "amax"), (ph, "amax"), (pw * ph, "amin"))):
        per_level[row].scatter_reduce_(0, level, value, how, include_self=False)
    inter = torch.minimum(w, per_level[0]) * torch.minimum(h, per_level[1])  # (G, L)
    area = torch.maximum(w * h, per_level[2])
    return torch.where(area > 0, inter / area, 1.0).clamp(max=1.0) * (1 + 1e-4) + 1e-6

