"""Dynamic soft label assignment (RTMDet, Lyu et al. 2022), batched."""

from __future__ import annotations

import torch
from torch import Tensor

from detkit.assigners.candidates import take_rows
from detkit.assigners.dynamic_k import DynamicKAssigner, PairInputs
from detkit.boxes import aligned_iou
from detkit.exact_math import exact_log

__all__ = ["DynamicSoftLabelAssigner"]

IOU_LOG_EPS = 1e-7  # RTMDet: -log(IoU + 1e-7), finite for IoU 0
BCE_LOG_MIN = -100.0  # logs clamped as torch's binary_cross_entropy does (scores of exactly 0 or 1)
OUTSIDE_COST = 1e8  # mmyolo's cost of priors inside no GT when they are not excluded (candidates_only=False)
CLS_COSTS = ("all_classes", "gt_class")


class DynamicSoftLabelAssigner(DynamicKAssigner):
    """RTMDet's dynamic soft label assignment.

    Steps (all images and GTs at once):

    1. Candidates of an image: priors whose centre lies strictly inside any of its valid GTs.
    2. Cost of each (GT, candidate) pair, a candidate of another GT's box included:
       ``cls_cost + iou_weight * -log(IoU + 1e-7) + 10 ** (d / stride - soft_center_radius)``,
       ``IoU`` of the predicted box with the GT, ``d`` the distance from the prior's centre to
       the GT's centre. The classification cost compares the scores ``p`` (probabilities) with
       the soft label ``y = one-hot(GT class) * IoU``: ``sum over classes of BCE(p, y) * (y - p)**2``
       (``cls_cost="all_classes"``, RTMDet's code in mmdet) or the GT class's term alone
       (``"gt_class"``, mmyolo's batched assigner).
    3. Dynamic k per GT: ``max(1, int(sum of its topk largest candidate IoUs))``.
    4. Each GT takes its k lowest-cost candidates (ties: lower prior index).
    5. A prior taken by several GTs goes to the GT of lowest cost among all valid GTs (ties: lowest
       GT index).

    ``candidates_only=False`` is mmyolo's ``BatchDynamicSoftLabelAssigner``: step 3 sums the best
    IoUs of *every* prior, and priors inside no GT cost ``1e8`` instead of being excluded, so a GT
    needing more priors than there are candidates takes some of them, in ``torch.sort``'s order
    (equal costs of ``1e8`` then go to the first valid GT in step 5).

    ``iou`` and ``score_target`` of the result are the IoU of the predicted box with its GT (the
    soft label's value). Ignores nothing. Needs ``prior_strides``, ``pred_boxes`` and
    ``pred_scores`` (probabilities). On a :class:`~detkit.anchors.PriorGrid` a GT is costed only
    against the candidates whose predicted box overlaps it (:mod:`detkit.assigners.dynamic_k`): every
    other pair costs at least ``iou_weight * -log(1e-7)``.

    Args:
        topk: IoUs summed for the dynamic k (also its upper bound).
        iou_weight: weight of the IoU cost.
        soft_center_radius: the centre prior's radius, in strides (the cost is 1 at that distance).
        cls_cost: ``all_classes`` or ``gt_class`` (step 2).
        candidates_only: False for mmyolo's batched variant (see above).
    """

    uses_predictions: bool = True  # needs pred_scores (B, N, C) from the loss pipeline

    def __init__(self, topk: int = 13, iou_weight: float = 3.0, soft_center_radius: float = 3.0,
                 cls_cost: str = "all_classes", candidates_only: bool = True) -> None:
        if not isinstance(topk, int) or topk < 1:
            raise ValueError(f"topk must be a positive int, got {topk!r}")
        if cls_cost not in CLS_COSTS:
            raise ValueError(f"cls_cost must be one of {CLS_COSTS}, got {cls_cost!r}")
        self.topk = topk
        self.iou_weight = float(iou_weight)
        self.soft_center_radius = float(soft_center_radius)
        self.cls_cost = cls_cost
        self.candidates_only = bool(candidates_only)
        self.candidate_topk = topk  # the dynamic k's IoUs (DynamicKRule)
        self.tie_order = "index" if self.candidates_only else "torch_sort"  # mmyolo's: torch.sort's order
        self.all_priors_usable = not self.candidates_only

    def __repr__(self) -> str:
        return (f"DynamicSoftLabelAssigner(topk={self.topk}, iou_weight={self.iou_weight}, "
                f"soft_center_radius={self.soft_center_radius}, cls_cost={self.cls_cost!r}, "
                f"candidates_only={self.candidates_only})")

    score_target = True  # the soft label: the IoU

    def score_terms(self, scores: Tensor, fg: Tensor) -> dict[str, Tensor]:
        """The raw scores (``flat``), and with ``cls_cost="all_classes"`` ``neg_sum (B*N,)``: per candidate, the
        sum over classes of the background term ``-log(1 - p) * p**2`` (logs clamped at -100)."""
        terms = {"flat": scores.flatten()}
        if self.cls_cost == "all_classes":
            rows = fg.nonzero().flatten()
            p = scores.index_select(0, rows).clamp(0.0, 1.0)  # (F, C)
            terms["neg_sum"] = torch.zeros(scores.shape[0], device=scores.device)
            terms["neg_sum"][rows] = (-torch.log1p(-p).clamp_(min=BCE_LOG_MIN) * p * p).sum(dim=-1)
        return terms

    @staticmethod
    def class_terms(x: PairInputs, gt: Tensor, pred: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``p``, ``log p`` and ``log(1 - p)`` (logs clamped at -100) of the GT class's score, per pair."""
        p = x.scores["flat"].take(pred * x.num_classes + take_rows(x.labels, gt)).clamp(0.0, 1.0)
        return p, p.log().clamp_(min=BCE_LOG_MIN), torch.log1p(-p).clamp_(min=BCE_LOG_MIN)

    def candidate_rects(self, boxes: Tensor, strides: Tensor) -> list[Tensor]:
        """The GT's box, whatever the stride (step 1: the prior's centre strictly inside it)."""
        shape = torch.broadcast_shapes(boxes.shape[:-1], strides.shape)  # type: ignore[no-untyped-call]
        return [boxes.expand(*shape, 4)]

    def pair_iou(self, x: PairInputs, gt: Tensor, pred: Tensor) -> Tensor:
        valid = take_rows(x.valid, gt)
        usable = valid if self.all_priors_usable else valid & take_rows(x.fg, pred)
        return aligned_iou(take_rows(x.gt_boxes, gt), take_rows(x.pred_boxes, pred)).masked_fill(~usable, 0.0)

    def pair_cost(self, x: PairInputs, gt: Tensor, pred: Tensor, prior: Tensor, iou: Tensor) -> Tensor:
        """Step 2 of the pairs. Off candidates or valid GTs the cost is ``inf``; with ``candidates_only=False``
        priors inside no GT cost ``OUTSIDE_COST`` (padding rows still ``inf``)."""
        p_y, lp_y, lq_y = self.class_terms(x, gt, pred)
        gap = iou - p_y
        cls = -(iou * lp_y + (1 - iou) * lq_y) * (gap * gap)  # the GT class's term, soft label = IoU
        if self.cls_cost == "all_classes":
            # + every other class's background term
            cls = cls + (x.scores["neg_sum"].take(pred) - (-lq_y * p_y * p_y))
        cx, cy = take_rows(x.centres, prior).unbind(-1)
        x1, y1, x2, y2 = take_rows(x.gt_boxes, gt).unbind(-1)
        dx, dy = cx - (x1 + x2) / 2, cy - (y1 + y2) / 2
        distance = (dx * dx + dy * dy).sqrt() / take_rows(x.strides, prior)
        centre_cost = torch.pow(10.0, (distance - self.soft_center_radius).double()).float()  # size-independent
        cost = cls + self.iou_weight * -exact_log(iou + IOU_LOG_EPS) + centre_cost
        valid, fg = take_rows(x.valid, gt), take_rows(x.fg, pred)
        if self.candidates_only:
            return cost.masked_fill(~(valid & fg), float("inf"))
        outside = torch.full_like(cost, OUTSIDE_COST).masked_fill(~valid, float("inf"))
        return torch.where(valid & fg, cost, outside)

    def cost_floor(self, x: PairInputs, gt: Tensor) -> Tensor:
        # A pair with IoU 0: class cost >= 0, centre cost >= 0 (or OUTSIDE_COST, larger).
        zero = torch.zeros(gt.shape[0], device=gt.device)
        return zero + self.iou_weight * -exact_log(zero + IOU_LOG_EPS) + zero
