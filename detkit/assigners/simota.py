"""SimOTA (YOLOX, Ge et al. 2021): dynamic-k matching on a classification + IoU cost, batched."""

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

__all__ = ["SimOTAAssigner"]

OUT_OF_CENTRE_COST = 100000.0  # YOLOX's cost added to pairs not both in the box and the centre region
IOU_LOG_EPS = 1e-8  # YOLOX: -log(IoU + 1e-8), finite for IoU 0
BCE_LOG_MIN = -100.0  # torch's binary_cross_entropy clamps its logs here; the cost does the same


class SimOTAAssigner:
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

    ``iou`` of the result is the IoU of the *predicted* box with its GT (YOLOX's IoU-aware target).
    SimOTA ignores nothing: ``ignore_mask`` is all False. Needs ``prior_strides``, ``pred_boxes``
    and ``pred_scores``.

    Args:
        center_radius: half-size of the centre region, in strides.
        candidate_topk: IoUs summed for the dynamic k (also its upper bound).
        iou_weight, cls_weight: cost weights.
        score_sqrt: take the square root of the scores in the classification cost (YOLOX).
        max_gt_chunk: process at most this many GTs at a time (bounds memory; same result).
    """

    uses_predictions: bool = True  # needs pred_scores (B, N, C) from the loss pipeline

    def __init__(self, center_radius: float = 2.5, candidate_topk: int = 10, iou_weight: float = 3.0,
                 cls_weight: float = 1.0, score_sqrt: bool = True, max_gt_chunk: int | None = None) -> None:
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

    def assign(self, priors: Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor, *,
               num_level_priors: Sequence[int] | None = None, prior_strides: Tensor | None = None,
               pred_boxes: Tensor | None = None, pred_scores: Tensor | None = None) -> AssignResult:
        """Assign; needs ``prior_strides``, ``pred_boxes`` and ``pred_scores`` (see :class:`AssignResult`)."""
        priors, gt = prepare_inputs(priors, gt_boxes, gt_labels, gt_mask)
        b, n = gt.batch_size, priors.shape[0]
        strides = check_strides(prior_strides, n, "SimOTAAssigner")
        pred_boxes, scores = check_predictions(pred_boxes, pred_scores, b, n, gt, "SimOTAAssigner")
        centres = (priors[:, :2] + priors[:, 2:]) / 2  # (N, 2)
        chunks = gt_chunks(gt.num_gts, self.max_gt_chunk)
        fg = torch.zeros(b, n, dtype=torch.bool, device=priors.device)
        geometry = None
        for chunk in chunks:  # step 1: the candidates of each image (needs every GT before step 3)
            geometry = self._geometry(centres, strides, gt.boxes[:, chunk])
            fg |= ((geometry[0] | geometry[1]) & gt.valid[:, chunk, None]).any(dim=1)
        if len(chunks) > 1:
            geometry = None  # recomputed chunk by chunk below
        neg_sum, neg_minus_pos = self._score_logs(scores)
        matches = DynamicKMatches(b, n, priors.device)
        for chunk in chunks:
            if geometry is None:
                geometry = self._geometry(centres, strides, gt.boxes[:, chunk])
            cost, iou = self._cost(geometry, pred_boxes, neg_sum, neg_minus_pos, gt, chunk, fg)
            geometry = None
            counts = dynamic_ks(iou, self.candidate_topk)  # step 3, (B, Mc)
            matches.add(take_lowest_cost(cost, counts, self.candidate_topk), cost, chunk.start)  # steps 4-5
        gt_index = matches.gt_index()
        return make_result(gt_index, aligned_iou(pred_boxes, assigned_boxes(gt, gt_index)), gt)

    def _geometry(self, centres: Tensor, strides: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        """Step 1 for GTs ``boxes (B, Mc, 4)``: ``(in_box, in_centre)``, ``Tensor[B, Mc, N]`` bool each."""
        x, y = centres[:, 0], centres[:, 1]  # (N,)
        x1, y1, x2, y2 = (boxes[..., i:i + 1] for i in range(4))  # (B, Mc, 1) each
        in_box = (x > x1) & (y > y1) & (x2 > x) & (y2 > y)  # (B, Mc, N)
        radius = self.center_radius * strides  # (N,)
        gcx, gcy = (x1 + x2) / 2, (y1 + y2) / 2
        in_centre = (x > gcx - radius) & (y > gcy - radius) & (gcx + radius > x) & (gcy + radius > y)
        return in_box, in_centre

    def _score_logs(self, scores: Tensor) -> tuple[Tensor, Tensor]:
        """Per prior and class, ``-log(1 - p)`` and ``-log(p)`` (logs clamped as in torch's BCE).

        Returns:
            ``(Tensor[B, N] sum over classes of -log(1 - p), Tensor[B, C, N] of -log(1-p) - (-log p))``
            so that the BCE against class y is ``first - second[y]``.
        """
        p = scores.clamp(0.0, 1.0)  # a copy: the in-place steps below never touch the input
        if self.score_sqrt:
            p = p.sqrt_()
        neg = torch.log1p(-p).clamp_(min=BCE_LOG_MIN).neg_()  # (B, N, C)
        pos = p.log_().clamp_(min=BCE_LOG_MIN).neg_()  # (B, N, C), in p's memory
        neg_sum = neg.sum(dim=-1)  # (B, N)
        return neg_sum, neg.sub_(pos).transpose(1, 2).contiguous()  # (B, N, C) -> (B, C, N)

    def _cost(self, geometry: tuple[Tensor, Tensor], pred_boxes: Tensor, neg_sum: Tensor, neg_minus_pos: Tensor,
              gt: GTBatch, chunk: slice, fg: Tensor) -> tuple[Tensor, Tensor]:
        """Step 2 for one chunk (``geometry``: its step-1 masks): ``(cost, iou)``, ``Tensor[B, Mc, N]``
        each; ``inf`` / 0 off candidates."""
        boxes, valid = gt.boxes[:, chunk], gt.valid[:, chunk]
        in_box, in_centre = geometry
        usable = fg[:, None, :] & valid[:, :, None]  # (B, Mc, N)
        iou = pairwise_iou(boxes, pred_boxes).masked_fill_(~usable, 0.0)  # (B, Mc, 4) x (B, N, 4) -> (B, Mc, N)
        labels = gt.labels[:, chunk].clamp(0, neg_minus_pos.shape[1] - 1)  # padding rows may hold any label
        labels = labels[:, :, None].expand(-1, -1, neg_sum.shape[-1])  # (B, Mc) -> (B, Mc, N)
        cls_cost = neg_sum[:, None, :] - neg_minus_pos.gather(1, labels)  # (B, Mc, N)
        cost = (self.cls_weight * cls_cost + self.iou_weight * -exact_log(iou + IOU_LOG_EPS)
                + OUT_OF_CENTRE_COST * (~(in_box & in_centre)).float())
        return cost.masked_fill(~usable, float("inf")), iou
