"""Task-aligned assignment (TOOD, Feng et al. 2021; as used by YOLOv6/YOLOv8), batched."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from detkit.anchors import PriorGrid
from detkit.assigners.base import AssignResult, GTBatch, check_predictions, make_result, prepare
from detkit.assigners.candidates import (
    CandidateTable,
    PriorBest,
    candidate_tables,
    first_valid,
    gt_rows,
    level_regions,
    segment_topk,
    take_rows,
)
from detkit.assigners.threads import limit_assign_threads
from detkit.boxes import IOU_MODES, aligned_iou
from detkit.exact_math import exact_pow

__all__ = ["TaskAlignedAssigner"]

NOT_POSITIVE = -1.0  # IoU stored for pairs that are not positive (below any real IoU)
RESOLVE_RULES = ("positives", "in_gts", "all_gts")


@dataclass
class _Inputs:
    """Flat tables the per-pair values are gathered from (GT ``b * M + m``, prediction ``b * N + n``)."""

    centres: Tensor  # (N, 2) prior centres
    pred_boxes: Tensor  # (B*N, 4) fp32
    scores: Tensor  # (B*N*C,) fp32 probabilities
    gt_boxes: Tensor  # (B*M, 4)
    cand_boxes: Tensor  # (B*M, 4) the box of the candidate test (step 1)
    labels: Tensor  # (B*M,) long, clamped to [0, C)
    valid: Tensor  # (B*M,) bool
    num_classes: int


class TaskAlignedAssigner:
    """Task-aligned assignment: the top-``topk`` priors of each GT by ``score**alpha * IoU**beta``.

    Steps (all images and GTs at once, over the candidate table of :mod:`detkit.assigners.candidates`):

    1. Candidates of a GT: priors whose centre lies inside it (every side margin ``> center_eps``).
       With ``center_min_side`` (Ultralytics 8.4: its second stride), the box tested is the GT's
       ``(cx, cy, w, h)`` with each side shorter than ``center_min_side`` set to it, as corners
       ``c -/+ side / 2``; the IoU of step 2 still uses the GT box itself.
    2. For candidates, IoU of the *predicted* box with the GT (``iou_mode``: ``iou`` as in TOOD,
       ``ciou`` as in YOLOv8, clamped at 0) and align metric ``s**alpha * IoU**beta``, ``s`` the
       predicted probability of the GT's class; 0 for non-candidates.
    3. Each GT keeps its ``min(topk, N)`` priors of largest metric (ties: lower prior index); those
       that are candidates with a metric ``> 0`` are its positives (TOOD's rule). With
       ``keep_zero_metric`` every kept candidate is positive, metric 0 included (Ultralytics 8.4);
       the kept set is then ``torch.topk``'s on the GT's row of N metrics (0 off candidates), as in
       Ultralytics, which is what makes it the same as Ultralytics' on the same inputs
       (``segment_topk(..., ties="torch")``).
    4. A prior positive for several GTs goes to the GT of highest IoU (ties: lowest GT index), among
       the GTs it is positive for (``resolve="positives"``, TOOD), among all GTs whose box holds
       its centre, positive for it or not (``resolve="in_gts"``), or among all valid GTs with the
       IoU counted 0 where the GT's box does not hold the centre (``resolve="all_gts"``,
       Ultralytics 8.4's ``select_highest_overlaps``: when every such IoU is 0 the prior goes to
       the first valid GT, which is Ultralytics' GT row 0 whenever padding rows trail, as in its
       batches). A prior positive for one GT keeps it in every rule.
    4b. With ``topk2`` (Ultralytics 8.4's second filter, YOLO26's one-to-one rule at ``topk2=1``): each
       GT keeps, of the priors step 4 gave it, its ``min(topk2, N)`` of largest metric; the others are not
       positive. Ties: lower prior index; with ``keep_zero_metric``, ``torch.topk``'s set on the GT's row
       of N metrics (0 off the priors step 4 gave it), as Ultralytics, so a GT whose priors all have
       metric 0 keeps only those of them ``torch.topk`` picks among the row's zeros: often none.
    5. Normalised target: per GT, ``t = metric / max metric * max IoU``, maxima over the priors
       finally assigned to that GT (``eps`` guards the division).

    The table (step 1) on a :class:`~detkit.anchors.PriorGrid` is each GT's window of priors whose
    centres lie in its step-1 box; on bare-tensor priors, all pairs. Both give the same result bit for bit.

    Extra result fields: ``align_metric`` (the metric of the assigned pair) and ``score_target``
    (``t`` of step 5), both ``Tensor[B, N]``, 0 where not positive; ``iou`` is the predicted box's.
    Ignores nothing. Needs ``pred_boxes`` and ``pred_scores`` (probabilities).

    Args:
        topk: priors kept per GT.
        alpha: exponent of the class score in the metric ``score**alpha * IoU**beta``.
        beta: exponent of the IoU in the metric.
        iou_mode: ``iou`` or ``ciou``.
        center_eps: least distance (px) from a candidate's centre to every GT side (YOLOv8: 1e-9).
        center_min_side: least GT side (px) of the candidate test (step 1); None = the GT as it is.
        keep_zero_metric: kept candidates are positive even at metric 0 (step 3).
        resolve: ``positives``, ``in_gts`` or ``all_gts`` (step 4).
        topk2: priors kept per GT after step 4 (step 4b); None (or ``topk`` itself, as in Ultralytics,
            where the filter runs only when ``topk2 != topk``) for no second filter.
        eps: added to the max metric in step 5.
    """

    uses_predictions: bool = True  # needs pred_scores (B, N, C) from the loss pipeline
    score_target = True  # the result's score_target is the normalised metric (step 5)

    def __init__(self, topk: int = 13, alpha: float = 1.0, beta: float = 6.0, iou_mode: str = "iou",
                 center_eps: float = 1e-9, resolve: str = "positives", eps: float = 1e-9,
                 center_min_side: float | None = None, keep_zero_metric: bool = False,
                 topk2: int | None = None) -> None:
        if not isinstance(topk, int) or topk < 1:
            raise ValueError(f"topk must be a positive int, got {topk!r}")
        if topk2 is not None and (isinstance(topk2, bool) or not isinstance(topk2, int) or topk2 < 1):
            raise ValueError(f"topk2 must be a positive int or None, got {topk2!r}")
        if iou_mode not in ("iou", "ciou"):
            raise ValueError(f"iou_mode must be 'iou' or 'ciou' (of {IOU_MODES}), got {iou_mode!r}")
        if resolve not in RESOLVE_RULES:
            raise ValueError(f"resolve must be one of {RESOLVE_RULES}, got {resolve!r}")
        if center_min_side is not None and not center_min_side > 0:
            raise ValueError(f"center_min_side must be a positive size in pixels or None, got {center_min_side!r}")
        self.topk = topk
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.iou_mode = iou_mode
        self.center_eps = float(center_eps)
        self.resolve = resolve
        self.eps = float(eps)
        self.center_min_side = None if center_min_side is None else float(center_min_side)
        self.keep_zero_metric = bool(keep_zero_metric)
        self.topk2 = None if topk2 == topk else topk2

    def __repr__(self) -> str:
        return (f"TaskAlignedAssigner(topk={self.topk}, alpha={self.alpha}, beta={self.beta}, "
                f"iou_mode={self.iou_mode!r}, resolve={self.resolve!r}, center_min_side={self.center_min_side}, "
                f"keep_zero_metric={self.keep_zero_metric}, topk2={self.topk2})")

    @limit_assign_threads
    def assign(self, priors: PriorGrid | Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor, *,
               num_level_priors: Sequence[int] | None = None, prior_strides: Tensor | None = None,
               pred_boxes: Tensor | None = None, pred_scores: Tensor | None = None) -> AssignResult:
        """Assign (see :meth:`detkit.assigners.Assigner.assign`); needs ``pred_boxes`` and ``pred_scores``."""
        p, gt = prepare(priors, gt_boxes, gt_labels, gt_mask, num_level_priors=num_level_priors,
                        prior_strides=prior_strides)
        b, m, n = gt.batch_size, gt.num_gts, p.num_priors
        boxes, scores = check_predictions(pred_boxes, pred_scores, b, n, gt, "TaskAlignedAssigner")
        x = self._inputs(p.centres, boxes, scores, gt)
        by_pos = PriorBest(b, n, p.device, NOT_POSITIVE)  # step 4 among the GTs a prior is positive for
        by_cand = PriorBest(b, n, p.device, NOT_POSITIVE)  # ... among those resolve allows
        num_pos = torch.zeros(b * n, dtype=torch.long, device=p.device)
        rows = gt_rows(gt.valid)
        regions = None
        if p.grid is not None:  # step 1's box, on every level
            regions = level_regions(p.grid, x.cand_boxes[rows[0] * m + rows[1]], [0.0] * len(p.grid.levels))
        for table in candidate_tables(p, gt, regions, rows):
            iou, metric, cand = self._pair_values(x, table.gt_index, table.pred_index, table.prior)
            table, iou, metric = table.select(cand), iou[cand], metric[cand]
            pos = self._kept(table, metric)
            flat, owner = table.pred_index, table.owner
            num_pos.index_add_(0, flat[pos], torch.ones_like(flat[pos]))
            by_pos.update(flat[pos], iou[pos], owner[pos])
            if self.resolve != "positives":
                by_cand.update(flat, iou, owner)
        best_iou, best_gt = by_pos.result()
        if self.resolve != "positives":  # step 4 for priors positive for several GTs
            cand_iou, cand_gt = by_cand.result()
            if self.resolve == "all_gts":  # every valid GT competes: IoU 0 everywhere goes to the first one
                first = first_valid(gt)[:, None].expand(b, n)  # (B,) -> (B, N)
                none = (cand_iou <= 0) & (first >= 0)
                cand_iou, cand_gt = torch.where(none, 0.0, cand_iou), torch.where(none, first, cand_gt)
            several = num_pos.view(b, n) > 1
            best_iou, best_gt = torch.where(several, cand_iou, best_iou), torch.where(several, cand_gt, best_gt)
        metric = torch.zeros_like(best_iou)
        image, prior = (best_gt >= 0).nonzero(as_tuple=True)  # the metric of each positive's pair
        if image.numel():
            metric[image, prior] = self._pair_values(x, image * m + best_gt[image, prior], image * n + prior, prior)[1]
        if self.topk2 is not None:  # step 4b
            best_gt = torch.where(self._second_topk(best_gt, metric, rows, m), best_gt, -1)
        target = self._normalised(best_gt, best_iou, metric, m)
        return make_result(best_gt, best_iou, gt, align_metric=metric, score_target=target)

    def _kept(self, table: CandidateTable, metric: Tensor) -> Tensor:
        """Step 3 on a table of candidates: ``Tensor[P]`` bool, positive."""
        k = min(self.topk, table.num_priors)
        if self.keep_zero_metric:  # torch.topk's set on the row of N metrics, 0 off candidates
            return segment_topk(table, metric, k, ties="torch", fill=0.0)
        return segment_topk(table, metric, k) & (metric > 0)

    def _second_topk(self, best_gt: Tensor, metric: Tensor, rows: tuple[Tensor, Tensor], num_gts: int) -> Tensor:
        """Step 4b: ``Tensor[B, N]`` bool, the positives of ``best_gt (B, N)`` (-1: none) their GT keeps,
        ranked by ``metric (B, N)``; ``rows``: the valid GTs (:func:`gt_rows`), which every positive's GT is."""
        b, n = best_gt.shape
        image, prior = (best_gt >= 0).nonzero(as_tuple=True)  # (P,) each, by (image, prior)
        gt_flat = image * num_gts + best_gt[image, prior]
        order = torch.sort(gt_flat, stable=True).indices  # GT by GT, priors ascending within a GT
        row_of = torch.full((b * num_gts,), -1, dtype=torch.long, device=best_gt.device)
        row_of[rows[0] * num_gts + rows[1]] = torch.arange(rows[0].shape[0], device=best_gt.device)
        image, prior = image[order], prior[order]
        table = CandidateTable(image=rows[0], slot=rows[1], row=row_of[gt_flat[order]], prior=prior,
                               num_gts=num_gts, num_priors=n)
        assert self.topk2 is not None
        kept = segment_topk(table, metric[image, prior], min(self.topk2, n),
                            ties="torch" if self.keep_zero_metric else "index", fill=0.0)
        keep = torch.zeros(b * n, dtype=torch.bool, device=best_gt.device)
        keep[(image * n + prior)[kept]] = True
        return keep.view(b, n)

    def _inputs(self, centres: Tensor, pred_boxes: Tensor, scores: Tensor, gt: GTBatch) -> _Inputs:
        boxes = gt.boxes.flatten(0, 1)  # (B, M, 4) -> (B*M, 4)
        return _Inputs(centres=centres, pred_boxes=pred_boxes.flatten(0, 1),
                       scores=scores.flatten(), gt_boxes=boxes, cand_boxes=self._candidate_box(boxes),
                       labels=gt.labels.flatten().clamp(0, scores.shape[-1] - 1),  # padding rows may hold any label
                       valid=gt.valid.flatten(), num_classes=scores.shape[-1])

    def _pair_values(self, x: _Inputs, gt_row: Tensor, pred_row: Tensor,
                     prior: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Steps 1-2 for the pairs (GT ``gt_row``, prediction ``pred_row`` of prior ``prior``), ``Tensor[P]``
        long each, indices into :class:`_Inputs`' tables.

        Returns:
            ``(iou, metric, candidate)``, ``Tensor[P]`` each; IoU and metric 0 off candidates.
        """
        cx, cy = take_rows(x.centres, prior).unbind(-1)
        x1, y1, x2, y2 = take_rows(x.cand_boxes, gt_row).unbind(-1)
        e = self.center_eps
        cand = (cx - x1 > e) & (cy - y1 > e) & (x2 - cx > e) & (y2 - cy > e) & take_rows(x.valid, gt_row)
        iou = aligned_iou(take_rows(x.gt_boxes, gt_row), take_rows(x.pred_boxes, pred_row), mode=self.iou_mode)
        iou = (iou.clamp(min=0) if self.iou_mode == "ciou" else iou).masked_fill(~cand, 0.0)
        score = x.scores.take(pred_row * x.num_classes + take_rows(x.labels, gt_row))
        metric = (exact_pow(score, self.alpha) * exact_pow(iou, self.beta)).masked_fill(~cand, 0.0)
        return iou, metric, cand

    def _candidate_box(self, boxes: Tensor) -> Tensor:
        """Step 1's box ``(..., 4)``: the GT, or with ``center_min_side`` the GT with each side shorter than
        it set to it (corners ``centre -/+ side / 2``)."""
        if self.center_min_side is None:
            return boxes
        centre = (boxes[..., :2] + boxes[..., 2:]) / 2
        side = boxes[..., 2:] - boxes[..., :2]
        side = torch.where(side < self.center_min_side, torch.full_like(side, self.center_min_side), side)
        return torch.cat([centre - side / 2, centre + side / 2], -1)

    def _normalised(self, gt_index: Tensor, iou: Tensor, metric: Tensor, num_gts: int) -> Tensor:
        """Step 5: ``Tensor[B, N]`` normalised target from the final assignment."""
        b, n = gt_index.shape
        pos = gt_index >= 0
        slot = torch.where(pos, gt_index, torch.full_like(gt_index, num_gts))  # non-positives -> bin M
        zeros = torch.zeros(b, num_gts + 1, device=iou.device)
        max_metric = zeros.scatter_reduce(1, slot, torch.where(pos, metric, 0.0), "amax")  # (B, M+1)
        max_iou = zeros.scatter_reduce(1, slot, torch.where(pos, iou, 0.0), "amax")
        target = metric * max_iou.gather(1, slot) / (max_metric.gather(1, slot) + self.eps)
        return torch.where(pos, target, torch.zeros_like(target))
