"""SimOTA (YOLOX, Ge et al. 2021): dynamic-k matching on a classification + IoU cost, batched."""

from __future__ import annotations

import torch
from torch import Tensor

from detkit.assigners.candidates import take_rows
from detkit.assigners.dynamic_k import DynamicKAssigner, PairInputs
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
    and ``pred_scores``. On a :class:`~detkit.anchors.PriorGrid` a GT is costed only against the
    candidates whose predicted box can overlap it (:mod:`detkit.assigners.dynamic_k`): every other
    candidate costs at least ``1e5 + iou_weight * -log(1e-8)``.

    Args:
        center_radius: half-size of the centre region, in strides.
        candidate_topk: IoUs summed for the dynamic k (also its upper bound).
        iou_weight: weight of the IoU cost (``-log(IoU)``).
        cls_weight: weight of the classification cost.
        score_sqrt: take the square root of the scores in the classification cost (YOLOX).
    """

    lists_centres_in_box = True  # "in box and centre" pairs lack the penalty even at IoU 0
    score_target = True  # the soft label: YOLOX's IoU-aware target

    def __init__(self, center_radius: float = 2.5, candidate_topk: int = 10, iou_weight: float = 3.0,
                 cls_weight: float = 1.0, score_sqrt: bool = True) -> None:
        if center_radius <= 0:
            raise ValueError(f"center_radius must be > 0 (in strides), got {center_radius}")
        if not isinstance(candidate_topk, int) or candidate_topk < 1:
            raise ValueError(f"candidate_topk must be a positive int, got {candidate_topk!r}")
        self.center_radius = float(center_radius)
        self.candidate_topk = candidate_topk
        self.iou_weight = float(iou_weight)
        self.cls_weight = float(cls_weight)
        self.score_sqrt = bool(score_sqrt)

    def __repr__(self) -> str:
        return (f"SimOTAAssigner(center_radius={self.center_radius}, candidate_topk={self.candidate_topk}, "
                f"iou_weight={self.iou_weight}, cls_weight={self.cls_weight})")

    def score_logs(self, scores: Tensor) -> tuple[Tensor, Tensor]:
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

    def score_terms(self, scores: Tensor, fg: Tensor) -> dict[str, Tensor]:
        """``neg_sum (B*N,)``: per candidate, the sum over classes of ``-log(1 - q)`` (in place: the largest
        tensor the rule builds); ``flat``: the scores, from which :meth:`class_cost` takes the GT class's."""
        rows = fg.nonzero().flatten()
        q = scores.index_select(0, rows).clamp_(0.0, 1.0)  # (F, C)
        if self.score_sqrt:
            q.sqrt_()
        neg_sum = torch.zeros(scores.shape[0], device=scores.device)
        neg_sum[rows] = q.neg_().log1p_().clamp_(min=BCE_LOG_MIN).sum(dim=-1).neg_()  # = sum of -clamp(log1p(-q))
        return {"neg_sum": neg_sum, "flat": scores.flatten()}

    def class_cost(self, x: PairInputs, gt: Tensor, pred: Tensor) -> Tensor:
        """``sum over classes of BCE(q, one-hot GT class)`` of the pairs."""
        score = x.scores["flat"].take(pred * x.num_classes + take_rows(x.labels, gt))
        neg, pos = self.score_logs(score)
        return x.scores["neg_sum"].take(pred) - (neg - pos)

    def _rects(self, boxes: Tensor, stride: Tensor) -> list[Tensor]:
        """The box and the centre region (``center_radius * stride`` around the GT's centre) of ``boxes
        (..., 4)`` for strides ``stride (...)`` (broadcast): ``[Tensor[..., 4], Tensor[..., 4]]``."""
        x1, y1, x2, y2 = boxes.unbind(-1)
        gcx, gcy = (x1 + x2) / 2, (y1 + y2) / 2
        radius = self.center_radius * stride
        centre = torch.stack([gcx - radius, gcy - radius, gcx + radius, gcy + radius], -1)
        return [boxes.expand(centre.shape), centre]

    def candidate_rects(self, boxes: Tensor, strides: Tensor) -> list[Tensor]:
        """In box or in centre (step 1): the box and the centre region."""
        return self._rects(boxes, strides)

    def in_box_and_centre(self, x: PairInputs, gt: Tensor, prior: Tensor) -> Tensor:
        """Bool per pair: the prior's centre strictly inside the GT's box and its centre region."""
        # _rects' two tests on the pairs' columns, the same fp32 operations (no stacked (..., 4) temporaries)
        x1, y1, x2, y2 = take_rows(x.gt_boxes, gt).unbind(-1)
        cx, cy = take_rows(x.centres, prior).unbind(-1)
        radius = self.center_radius * take_rows(x.strides, prior)
        gcx, gcy = (x1 + x2) / 2, (y1 + y2) / 2
        hit = (cx > x1).logical_and_(cy > y1).logical_and_(x2 > cx).logical_and_(y2 > cy)
        hit.logical_and_(cx > gcx - radius).logical_and_(cy > gcy - radius)
        return hit.logical_and_(gcx + radius > cx).logical_and_(gcy + radius > cy)

    def pair_iou(self, x: PairInputs, gt: Tensor, pred: Tensor) -> Tensor:
        usable = take_rows(x.fg, pred) & take_rows(x.valid, gt)
        return aligned_iou(take_rows(x.gt_boxes, gt), take_rows(x.pred_boxes, pred)).masked_fill(~usable, 0.0)

    def pair_cost(self, x: PairInputs, gt: Tensor, pred: Tensor, prior: Tensor, iou: Tensor) -> Tensor:
        """Step 2 of the pairs; ``inf`` off candidates and valid GTs."""
        usable = take_rows(x.fg, pred) & take_rows(x.valid, gt)
        cost = (self.cls_weight * self.class_cost(x, gt, pred) + self.iou_weight * -exact_log(iou + IOU_LOG_EPS)
                + OUT_OF_CENTRE_COST * (~self.in_box_and_centre(x, gt, prior)).float())
        return cost.masked_fill(~usable, float("inf"))

    def must_list(self, x: PairInputs, gt: Tensor, prior: Tensor, iou: Tensor) -> Tensor:
        return (iou > 0) | self.in_box_and_centre(x, gt, prior)

    def cost_floor(self, x: PairInputs, gt: Tensor) -> Tensor:
        # Any other pair has IoU 0 and the out-of-centre penalty, and a classification cost >= 0.
        zero = torch.zeros(gt.shape[0], device=gt.device)
        return self.cls_weight * zero + self.iou_weight * -exact_log(zero + IOU_LOG_EPS) + OUT_OF_CENTRE_COST
