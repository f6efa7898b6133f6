"""Max-IoU assignment (Faster R-CNN / RetinaNet / mmdet's MaxIoUAssigner rule), batched."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from detkit.assigners.base import AssignResult, empty_state, make_result, prepare_inputs
from detkit.assigners.chunking import check_chunk, gt_chunks, merge_best
from detkit.boxes import pairwise_iou

__all__ = ["MaxIoUAssigner"]

NO_GT_IOU = -1.0  # IoU given to (prior, padding GT) pairs: below any real IoU, so never a maximum


class MaxIoUAssigner:
    """Each prior goes to its highest-IoU GT when that IoU is high enough.

    Steps (per image, all images at once):

    1. IoU of every prior with every valid GT, ``(B, N, M)`` (chunks of GTs when ``max_gt_chunk``).
    2. Per prior, its best GT: the maximum IoU; ties go to the lowest GT index (like ``torch.max``).
    3. Best IoU ``>= pos_iou_thr`` -> positive to that GT; ``< neg_iou_thr`` -> negative; in between
       -> ignored. A prior of an image without valid GTs is negative.
    4. Low-quality matching (``match_low_quality``): each GT whose best IoU over the priors is
       ``> 0`` and ``>= min_pos_iou`` also takes *every* prior that reaches that best IoU, whatever
       step 3 said. When several GTs claim one prior this way, the later GT in the list wins.

    ``iou`` of the result is the IoU with the assigned GT (the GT's best IoU for low-quality matches).

    Args:
        pos_iou_thr: IoU from which a prior is positive.
        neg_iou_thr: IoU below which a prior is negative (``<= pos_iou_thr``).
        min_pos_iou: least best-IoU a GT needs for low-quality matching.
        match_low_quality: apply step 4 (so every GT with any overlap gets a prior).
        max_gt_chunk: process at most this many GTs at a time (bounds memory; same result).
    """

    uses_predictions: bool = False  # box-only: the loss pipeline need not compute pred_scores

    def __init__(self, pos_iou_thr: float, neg_iou_thr: float, min_pos_iou: float = 0.0,
                 match_low_quality: bool = True, max_gt_chunk: int | None = None) -> None:
        if not 0.0 <= neg_iou_thr <= pos_iou_thr:
            raise ValueError(f"need 0 <= neg_iou_thr <= pos_iou_thr, got neg_iou_thr={neg_iou_thr}, "
                             f"pos_iou_thr={pos_iou_thr}")
        if min_pos_iou < 0:
            raise ValueError(f"min_pos_iou must be >= 0, got {min_pos_iou}")
        self.pos_iou_thr = float(pos_iou_thr)
        self.neg_iou_thr = float(neg_iou_thr)
        self.min_pos_iou = float(min_pos_iou)
        self.match_low_quality = bool(match_low_quality)
        self.max_gt_chunk = check_chunk(max_gt_chunk)

    def __repr__(self) -> str:
        return (f"MaxIoUAssigner(pos_iou_thr={self.pos_iou_thr}, neg_iou_thr={self.neg_iou_thr}, "
                f"min_pos_iou={self.min_pos_iou}, match_low_quality={self.match_low_quality})")

    def assign(self, priors: Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor, *,
               num_level_priors: Sequence[int] | None = None, prior_strides: Tensor | None = None,
               pred_boxes: Tensor | None = None, pred_scores: Tensor | None = None) -> AssignResult:
        """Assign; only ``priors (N, 4)`` and the padded GTs are used (see :class:`AssignResult`)."""
        priors, gt = prepare_inputs(priors, gt_boxes, gt_labels, gt_mask)
        b, n = gt.batch_size, priors.shape[0]
        best_iou, best_gt = empty_state(b, n, priors.device, NO_GT_IOU)
        lq_iou, lq_gt = empty_state(b, n, priors.device, 0.0)
        for chunk in gt_chunks(gt.num_gts, self.max_gt_chunk):
            iou = self._pair_iou(priors, gt.boxes[:, chunk], gt.valid[:, chunk])  # (B, Mc, N)
            chunk_best, chunk_gt = iou.max(dim=1)  # (B, N); first maximum on ties
            best_iou, best_gt = merge_best(best_iou, best_gt, chunk_best, chunk_gt + chunk.start)
            if self.match_low_quality:
                c_iou, c_gt = self._low_quality(iou, gt.valid[:, chunk])
                claimed = c_gt >= 0
                lq_gt = torch.where(claimed, c_gt + chunk.start, lq_gt)  # later chunks hold later GTs
                lq_iou = torch.where(claimed, c_iou, lq_iou)
        has_gt = best_gt >= 0
        pos = has_gt & (best_iou >= self.pos_iou_thr)
        neg = ~has_gt | (best_iou < self.neg_iou_thr)
        gt_index = torch.where(pos, best_gt, torch.full_like(best_gt, -1))
        iou_out = torch.where(pos, best_iou, torch.zeros_like(best_iou))
        low_quality = lq_gt >= 0
        gt_index = torch.where(low_quality, lq_gt, gt_index)
        iou_out = torch.where(low_quality, lq_iou, iou_out)
        return make_result(gt_index, iou_out, gt, ignore_mask=~neg)

    @staticmethod
    def _pair_iou(priors: Tensor, gt_boxes: Tensor, valid: Tensor) -> Tensor:
        """``Tensor[B, Mc, N]`` IoU of GTs ``(B, Mc, 4)`` with priors ``(N, 4)``; NO_GT_IOU for invalid GTs."""
        return pairwise_iou(gt_boxes, priors).masked_fill_(~valid[:, :, None], NO_GT_IOU)

    def _low_quality(self, iou: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """Step 4 on one chunk: per prior, the last claiming GT (chunk-local, -1 if none) and its IoU.

        Args:
            iou: ``Tensor[B, Mc, N]``.
            valid: ``Tensor[B, Mc]`` bool.
        """
        gt_best = iou.amax(dim=-1)  # (B, Mc): each GT's best IoU over the priors
        claims = valid & (gt_best > 0) & (gt_best >= self.min_pos_iou)  # (B, Mc)
        hits = (iou == gt_best[:, :, None]) & claims[:, :, None]  # (B, Mc, N)
        ids = torch.arange(iou.shape[1], device=iou.device)[:, None]  # (Mc, 1)
        last = torch.where(hits, ids, torch.full_like(ids, -1)).amax(dim=1)  # (B, N)
        return gt_best.gather(1, last.clamp(min=0)), last
