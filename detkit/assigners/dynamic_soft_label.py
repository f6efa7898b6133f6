"""Dynamic soft label assignment (RTMDet, Lyu et al. 2022), batched."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from detkit.assigners.base import (
    AssignResult,
    GTBatch,
    assigned_boxes,
    check_predictions,
    check_strides,
    make_result,
    prepare_inputs,
)
from detkit.assigners.chunking import check_chunk, gt_chunks
from detkit.assigners.dynamic_k import DynamicKMatches, dynamic_ks, take_lowest_cost
from detkit.exact_math import exact_log
from detkit.boxes import aligned_iou, pairwise_iou

__all__ = ["DynamicSoftLabelAssigner"]

IOU_LOG_EPS = 1e-7  # RTMDet: -log(IoU + 1e-7), finite for IoU 0
BCE_LOG_MIN = -100.0  # logs clamped as torch's binary_cross_entropy does (scores of exactly 0 or 1)
OUTSIDE_COST = 1e8  # mmyolo's cost of priors inside no GT when they are not excluded (candidates_only=False)
CLS_COSTS = ("all_classes", "gt_class")


class DynamicSoftLabelAssigner:
    """RTMDet's dynamic soft label assignment.

    Steps (all images and GTs at once; chunks of GTs when ``max_gt_chunk``):

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
    ``pred_scores`` (probabilities).

    Args:
        topk: IoUs summed for the dynamic k (also its upper bound).
        iou_weight: weight of the IoU cost.
        soft_center_radius: the centre prior's radius, in strides (the cost is 1 at that distance).
        cls_cost: ``all_classes`` or ``gt_class`` (step 2).
        candidates_only: False for mmyolo's batched variant (see above).
        max_gt_chunk: process at most this many GTs at a time (bounds memory; same result).
    """

    uses_predictions: bool = True  # needs pred_scores (B, N, C) from the loss pipeline

    def __init__(self, topk: int = 13, iou_weight: float = 3.0, soft_center_radius: float = 3.0,
                 cls_cost: str = "all_classes", candidates_only: bool = True,
                 max_gt_chunk: int | None = None) -> None:
        if not isinstance(topk, int) or topk < 1:
            raise ValueError(f"topk must be a positive int, got {topk!r}")
        if cls_cost not in CLS_COSTS:
            raise ValueError(f"cls_cost must be one of {CLS_COSTS}, got {cls_cost!r}")
        self.topk = topk
        self.iou_weight = float(iou_weight)
        self.soft_center_radius = float(soft_center_radius)
        self.cls_cost = cls_cost
        self.candidates_only = bool(candidates_only)
        self.max_gt_chunk = check_chunk(max_gt_chunk)

    def __repr__(self) -> str:
        return (f"DynamicSoftLabelAssigner(topk={self.topk}, iou_weight={self.iou_weight}, "
                f"soft_center_radius={self.soft_center_radius}, cls_cost={self.cls_cost!r}, "
                f"candidates_only={self.candidates_only})")

    def assign(self, priors: Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor, *,
               num_level_priors: Sequence[int] | None = None, prior_strides: Tensor | None = None,
               pred_boxes: Tensor | None = None, pred_scores: Tensor | None = None) -> AssignResult:
        """Assign; needs ``prior_strides``, ``pred_boxes`` and ``pred_scores`` (see :class:`AssignResult`)."""
        priors, gt = prepare_inputs(priors, gt_boxes, gt_labels, gt_mask)
        b, n = gt.batch_size, priors.shape[0]
        strides = check_strides(prior_strides, n, "DynamicSoftLabelAssigner")
        pred_boxes, scores = check_predictions(pred_boxes, pred_scores, b, n, gt, "DynamicSoftLabelAssigner")
        centres = (priors[:, :2] + priors[:, 2:]) / 2  # (N, 2)
        chunks = gt_chunks(gt.num_gts, self.max_gt_chunk)
        fg = torch.zeros(b, n, dtype=torch.bool, device=priors.device)
        for chunk in chunks:  # step 1 needs every GT before any cost
            fg |= (self._inside(centres, gt.boxes[:, chunk]) & gt.valid[:, chunk, None]).any(dim=1)
        terms = self._score_logs(scores)
        matches = DynamicKMatches(b, n, priors.device)
        for chunk in chunks:
            cost, iou = self._cost(centres, strides, pred_boxes, terms, gt, chunk, fg)  # step 2
            counts = dynamic_ks(iou, self.topk)  # step 3
            taken = take_lowest_cost(cost, counts, self.topk,
                                     tie_order="index" if self.candidates_only else "torch_sort")
            matches.add(taken, cost, chunk.start)  # steps 4-5
        gt_index = matches.gt_index()
        iou = aligned_iou(pred_boxes, assigned_boxes(gt, gt_index))  # (B, N)
        return make_result(gt_index, iou, gt, score_target=iou)

    @staticmethod
    def _inside(centres: Tensor, boxes: Tensor) -> Tensor:
        """``Tensor[B, Mc, N]`` bool: prior centre strictly inside GT ``boxes (B, Mc, 4)``."""
        x, y = centres[:, 0], centres[:, 1]  # (N,)
        x1, y1, x2, y2 = (boxes[..., i:i + 1] for i in range(4))  # (B, Mc, 1) each
        return (x - x1 > 0) & (y - y1 > 0) & (x2 - x > 0) & (y2 - y > 0)

    @staticmethod
    def _score_logs(scores: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per-prior score terms, computed once for every chunk.

        Returns:
            ``p``, ``log p`` and ``log(1 - p)`` (logs clamped at -100), ``Tensor[B, C, N]`` each
            (rows of N for gathering the GT class), and ``Tensor[B, N]``: the sum over classes of
            the background term ``BCE(p, 0) * p**2 = -log(1 - p) * p**2``.
        """
        p = scores.clamp(0.0, 1.0)  # (B, N, C)
        log_p = p.log().clamp_(min=BCE_LOG_MIN)
        log_q = torch.log1p(-p).clamp_(min=BCE_LOG_MIN)
        neg_sum = (-log_q * p * p).sum(dim=-1)  # (B, N)
        rows = (t.transpose(1, 2).contiguous() for t in (p, log_p, log_q))  # (B, N, C) -> (B, C, N)
        return (*rows, neg_sum)

    def _cost(self, centres: Tensor, strides: Tensor, pred_boxes: Tensor, terms: tuple[Tensor, ...],
              gt: GTBatch, chunk: slice, fg: Tensor) -> tuple[Tensor, Tensor]:
        """Step 2 for one chunk: ``(cost, iou)``, ``Tensor[B, Mc, N]`` each.

        Off candidates or valid GTs the cost is ``inf`` and the IoU 0; with ``candidates_only=False``
        priors inside no GT cost ``OUTSIDE_COST`` and keep their IoU (padding rows still do not).
        """
        p, log_p, log_q, neg_sum = terms
        boxes, valid = gt.boxes[:, chunk], gt.valid[:, chunk]
        iou = pairwise_iou(boxes, pred_boxes)  # (B, Mc, 4) x (B, N, 4) -> (B, Mc, N)
        labels = gt.labels[:, chunk].clamp(0, p.shape[1] - 1)  # padding rows may hold any label
        labels = labels[:, :, None].expand(-1, -1, centres.shape[0])  # (B, Mc) -> (B, Mc, N)
        p_y, lp_y, lq_y = p.gather(1, labels), log_p.gather(1, labels), log_q.gather(1, labels)  # (B, Mc, N)
        gap = iou - p_y
        cls = -(iou * lp_y + (1 - iou) * lq_y) * (gap * gap)  # the GT class's term, soft label = IoU
        if self.cls_cost == "all_classes":
            cls = cls + (neg_sum[:, None, :] - (-lq_y * p_y * p_y))  # + every other class's background term
        gcx = (boxes[..., 0:1] + boxes[..., 2:3]) / 2  # (B, Mc, 1)
        gcy = (boxes[..., 1:2] + boxes[..., 3:4]) / 2
        dx, dy = centres[:, 0] - gcx, centres[:, 1] - gcy  # (B, Mc, N)
        distance = (dx * dx + dy * dy).sqrt() / strides
        centre_cost = torch.pow(10.0, (distance - self.soft_center_radius).double()).float()  # size-independent
        cost = cls + self.iou_weight * -exact_log(iou + IOU_LOG_EPS) + centre_cost
        usable = fg[:, None, :] & valid[:, :, None]  # (B, Mc, N)
        if self.candidates_only:
            return cost.masked_fill(~usable, float("inf")), iou.masked_fill(~usable, 0.0)
        outside = torch.full_like(cost, OUTSIDE_COST).masked_fill(~valid[:, :, None], float("inf"))
        return torch.where(usable, cost, outside), iou.masked_fill(~valid[:, :, None], 0.0)
