"""SimOTA (YOLOX, Ge et al. 2021): dynamic-k matching on a classification + IoU cost, batched."""

from __future__ import annotations

import torch
from torch import Tensor

from detkit.assigners.candidates import PriorLayout, take_rows
from detkit.assigners.chunking import check_chunk
from detkit.assigners.dynamic_k import DynamicKAssigner, PairTables
from detkit.boxes import aligned_iou
from detkit.exact_math import exact_log

__all__ = ["SimOTAAssigner"]

OUT_OF_CENTRE_COST = 100000.0  # YOLOX's cost added to pairs not both in the box and the centre region
IOU_LOG_EPS = 1e-8  # YOLOX: -log(IoU + 1e-8), finite for IoU 0
BCE_LOG_MIN = -100.0  # torch's binary_cross_entropy clamps its logs here; the cost does the same


class SimOTAAssigner(DynamicKAssigner):
    """YOLOX's SimOTA.

    Steps (all images and GTs at once; padded GTs and non-candidate priors cost ``inf``):

    1. Centre prior: a prior centre is *in box* when strictly inside a GT, *in centre* when
       strictly within ``center_radius * stride`` of the GT centre on both axes. The image's
       candidates (``fg``) are the priors in box or in centre of any valid GT.
    2. Cost of each (GT, candidate) pair:
       ``cls_weight * BCE(sqrt(score), one-hot GT class) summed over classes``
       ``+ iou_weight * -log(IoU(pred box, GT) + 1e-8)``
       ``+ 1e5 * (not (in box and in centre))``. ``pred_scores`` are probabilities (for YOLO
       ``cls * obj``); the square root is YOLOX's (``score_sqrt=False`` uses the score as is).
    3. Dynamic k per GT: ``max(1, int(sum of its top candidate_topk candidate IoUs))``.
    4. Each GT takes its k lowest-cost candidates (ties: lower prior index).
    5. A prior taken by several GTs goes to the GT of lowest cost among *all* GTs (YOLOX's
       ``cost.min(0)``; ties: lowest GT index).

    ``iou`` and ``score_target`` of the result are the IoU of the *predicted* box with its GT
    (YOLOX's IoU-aware classification target, what ``cls_target="assigner"`` then learns).
    SimOTA ignores nothing: ``ignore_mask`` is all False. Needs ``prior_strides``, ``pred_boxes``
    and ``pred_scores``. The candidate-sparse form (``assign`` on grid priors, see
    :mod:`detkit.assigners.dynamic_k_sparse`) costs a GT only against the candidates whose predicted
    box can overlap it: every other candidate costs at least ``1e5 + iou_weight * -log(1e-8)``.

    Args:
        center_radius: half-size of the centre region, in strides.
        candidate_topk: IoUs summed for the dynamic k (also its upper bound).
        iou_weight: weight of the IoU cost (``-log(IoU)``).
        cls_weight: weight of the classification cost.
        score_sqrt: take the square root of the scores in the classification cost (YOLOX).
        max_gt_chunk: process at most this many GTs at a time (bounds memory; same result); "auto"
            (default) picks it from the free memory of a CUDA device, none on CPU (chunking.auto_chunk).
    """

    uses_predictions: bool = True  # needs pred_scores (B, N, C) from the loss pipeline
    lists_centres_in_box = True  # "in box and centre" pairs lack the penalty even at IoU 0
    score_target = True  # the soft label: YOLOX's IoU-aware target

    def __init__(self, center_radius: float = 2.5, candidate_topk: int = 10, iou_weight: float = 3.0,
                 cls_weight: float = 1.0, score_sqrt: bool = True, max_gt_chunk: int | str | None = "auto") -> None:
        if center_radius <= 0:
            raise ValueError(f"center_radius must be > 0 (in strides), got {center_radius}")
        if not isinstance(candidate_topk, int) or candidate_topk < 1:
            raise ValueError(f"candidate_topk must be a positive int, got {candidate_topk!r}")
        self.center_radius = float(center_radius)
        self.candidate_topk = candidate_topk
        self.iou_weight = float(iou_weight)
        self.cls_weight = float(cls_weight)
        self.score_sqrt = bool(score_sqrt)
        self.max_gt_chunk = check_chunk(max_gt_chunk)

    def __repr__(self) -> str:
        return (f"SimOTAAssigner(center_radius={self.center_radius}, candidate_topk={self.candidate_topk}, "
                f"iou_weight={self.iou_weight}, cls_weight={self.cls_weight})")

    def _score_logs(self, scores: Tensor) -> tuple[Tensor, Tensor]:
        """Per score ``p`` (``Tensor[..., C]``), ``-log(1 - q)`` and ``-log(q)``, ``q = sqrt(p)`` (or ``p``),
        logs clamped at -100 as in torch's BCE: the BCE against class y is ``neg.sum(-1) - (neg - pos)[y]``.

        Returns:
            ``(neg, pos)``, each of the shape of ``scores``.
        """
        q = scores.clamp(0.0, 1.0)  # a copy: the in-place steps below never touch the input
        if self.score_sqrt:
            q = q.sqrt_()
        neg = torch.log1p(-q).clamp_(min=BCE_LOG_MIN).neg_()
        return neg, q.log_().clamp_(min=BCE_LOG_MIN).neg_()  # pos in q's memory

    def _score_tables(self, scores: Tensor, fg: Tensor) -> dict[str, Tensor]:
        # The sum over classes of -log(1 - q) for the candidate rows (in place: the largest tensor the
        # rule builds); the GT class's terms per pair (_class_cost).
        rows = fg.nonzero().flatten()
        q = scores.index_select(0, rows).clamp_(0.0, 1.0)  # (F, C)
        if self.score_sqrt:
            q.sqrt_()
        neg_sum = torch.zeros(scores.shape[0], device=scores.device)
        neg_sum[rows] = q.neg_().log1p_().clamp_(min=BCE_LOG_MIN).sum(dim=-1).neg_()  # = sum of -clamp(log1p(-q))
        return {"neg_sum": neg_sum, "flat": scores.flatten()}

    def _class_cost(self, t: PairTables, gt_row: Tensor, pred_row: Tensor) -> Tensor:
        """``sum over classes of BCE(q, one-hot GT class)`` of the broadcast pairs."""
        score = t.scores["flat"].take(pred_row * t.num_classes + take_rows(t.labels, gt_row))
        neg, pos = self._score_logs(score)
        return t.scores["neg_sum"].take(pred_row) - (neg - pos)

    def _geometry(self, t: PairTables, gt_row: Tensor, prior: Tensor) -> tuple[Tensor, Tensor]:
        """Step 1 for the broadcast pairs: ``(in_box, in_centre)``, bool each."""
        x, y = take_rows(t.centres, prior).unbind(-1)
        x1, y1, x2, y2 = take_rows(t.gt_boxes, gt_row).unbind(-1)
        in_box = (x > x1) & (y > y1) & (x2 > x) & (y2 > y)
        radius = self.center_radius * take_rows(t.strides, prior)
        gcx, gcy = (x1 + x2) / 2, (y1 + y2) / 2
        in_centre = (x > gcx - radius) & (y > gcy - radius) & (gcx + radius > x) & (gcy + radius > y)
        return in_box, in_centre

    def _candidate_test(self, t: PairTables, gt_row: Tensor, prior: Tensor) -> Tensor:
        in_box, in_centre = self._geometry(t, gt_row, prior)
        return in_box | in_centre

    def _candidate_rects(self, layout: PriorLayout, boxes: Tensor) -> list[Tensor]:
        # In box: x > x1, x2 > x; in centre: x > gcx - radius, gcx + radius > x (radius: this level's).
        x1, y1, x2, y2 = boxes.unbind(-1)
        gcx, gcy = (x1 + x2) / 2, (y1 + y2) / 2
        centre = []
        for level in layout.levels:
            radius = self.center_radius * torch.full_like(gcx, level.stride)  # as center_radius * strides
            centre.append(torch.stack([gcx - radius, gcy - radius, gcx + radius, gcy + radius], -1))
        return [boxes[:, None, :].expand(-1, len(layout.levels), -1), torch.stack(centre, 1)]

    def _pair_iou(self, t: PairTables, gt_row: Tensor, pred_row: Tensor) -> Tensor:
        usable = take_rows(t.fg, pred_row) & take_rows(t.valid, gt_row)
        return aligned_iou(take_rows(t.gt_boxes, gt_row), take_rows(t.pred_boxes, pred_row)).masked_fill(~usable, 0.0)

    def _pair_cost(self, t: PairTables, gt_row: Tensor, pred_row: Tensor, prior: Tensor, iou: Tensor) -> Tensor:
        """Step 2 of the broadcast pairs; ``inf`` off candidates and valid GTs."""
        in_box, in_centre = self._geometry(t, gt_row, prior)
        usable = take_rows(t.fg, pred_row) & take_rows(t.valid, gt_row)
        cls_cost = self._class_cost(t, gt_row, pred_row)
        cost = (self.cls_weight * cls_cost + self.iou_weight * -exact_log(iou + IOU_LOG_EPS)
                + OUT_OF_CENTRE_COST * (~(in_box & in_centre)).float())
        return cost.masked_fill(~usable, float("inf"))

    def _must_list(self, t: PairTables, gt_row: Tensor, prior: Tensor, iou: Tensor) -> Tensor:
        in_box, in_centre = self._geometry(t, gt_row, prior)
        return (iou > 0) | (in_box & in_centre)

    def _unlisted_bound(self, t: PairTables, gt_row: Tensor) -> Tensor:
        # Any other pair has IoU 0 and the out-of-centre penalty, and a classification cost >= 0.
        zero = torch.zeros(gt_row.shape[0], device=gt_row.device)
        return self.cls_weight * zero + self.iou_weight * -exact_log(zero + IOU_LOG_EPS) + OUT_OF_CENTRE_COST
