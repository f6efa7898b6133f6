"""Max-IoU assignment (Faster R-CNN / RetinaNet / mmdet's MaxIoUAssigner rule), batched."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from detkit.assigners.base import AssignResult, GTBatch, TwoFormAssigner, empty_state, make_result, prepare_inputs
from detkit.assigners.candidates import (
    PriorLayout,
    first_valid,
    level_regions,
    prior_layout,
    valid_rows,
    window_pairs,
)
from detkit.assigners.chunking import check_chunk, gt_chunks, merge_best, scatter_max
from detkit.boxes import aligned_iou, pairwise_iou

__all__ = ["MaxIoUAssigner"]

NO_GT_IOU = -1.0  # IoU given to (prior, padding GT) pairs: below any real IoU, so never a maximum

State = tuple[Tensor, Tensor, Tensor, Tensor]  # best IoU, best GT, low-quality IoU, low-quality GT; (B, N) each


class MaxIoUAssigner(TwoFormAssigner):
    """Each prior goes to its highest-IoU GT when that IoU is high enough.

    Steps (per image, all images at once):

    1. IoU of every prior with every valid GT, ``(B, N, M)`` (chunks of GTs when ``max_gt_chunk``).
       The candidate-sparse form (``assign`` on grid priors) computes it only for the pairs whose
       boxes can overlap (prior centre within the GT widened by the level's largest prior half-size);
       every other pair has IoU 0.
    2. Per prior, its best GT: the maximum IoU; ties go to the lowest GT index (like ``torch.max``),
       so a prior overlapping no GT has IoU 0 with the image's first valid GT.
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
        max_gt_chunk: process at most this many GTs at a time (bounds memory; same result); "auto"
            (default) picks it from the free memory of a CUDA device, none on CPU (chunking.auto_chunk).
    """

    uses_predictions: bool = False  # box-only: the loss pipeline need not compute pred_scores

    def __init__(self, pos_iou_thr: float, neg_iou_thr: float, min_pos_iou: float = 0.0,
                 match_low_quality: bool = True, max_gt_chunk: int | str | None = "auto") -> None:
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

    def _assign(self, priors: Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor, *,
                num_level_priors: Sequence[int] | None, prior_strides: Tensor | None, pred_boxes: Tensor | None,
                pred_scores: Tensor | None, dense: bool) -> AssignResult:
        priors, gt = prepare_inputs(priors, gt_boxes, gt_labels, gt_mask)
        layout = None if dense else prior_layout(priors, num_level_priors, prior_strides)
        best_iou, best_gt, lq_iou, lq_gt = (self._dense_state(priors, gt) if layout is None
                                            else self._sparse_state(priors, gt, layout))
        has_gt = best_gt >= 0
        pos = has_gt & (best_iou >= self.pos_iou_thr)
        neg = ~has_gt | (best_iou < self.neg_iou_thr)
        gt_index = torch.where(pos, best_gt, torch.full_like(best_gt, -1))
        iou_out = torch.where(pos, best_iou, torch.zeros_like(best_iou))
        low_quality = lq_gt >= 0
        gt_index = torch.where(low_quality, lq_gt, gt_index)
        iou_out = torch.where(low_quality, lq_iou, iou_out)
        return make_result(gt_index, iou_out, gt, ignore_mask=~neg)

    def _dense_state(self, priors: Tensor, gt: GTBatch) -> State:
        """Steps 1, 2 and 4 over every (GT, prior) pair, chunk by chunk."""
        b, n = gt.batch_size, priors.shape[0]
        best_iou, best_gt = empty_state(b, n, priors.device, NO_GT_IOU)
        lq_iou, lq_gt = empty_state(b, n, priors.device, 0.0)
        for chunk in gt_chunks(gt.num_gts, self.max_gt_chunk, batch=b, num_priors=n, device=priors.device):
            iou = self._pair_iou(priors, gt.boxes[:, chunk], gt.valid[:, chunk])  # (B, Mc, N)
            chunk_best, chunk_gt = iou.max(dim=1)  # (B, N); first maximum on ties
            best_iou, best_gt = merge_best(best_iou, best_gt, chunk_best, chunk_gt + chunk.start)
            if self.match_low_quality:
                c_iou, c_gt = self._low_quality(iou, gt.valid[:, chunk])
                claimed = c_gt >= 0
                lq_gt = torch.where(claimed, c_gt + chunk.start, lq_gt)  # later chunks hold later GTs
                lq_iou = torch.where(claimed, c_iou, lq_iou)
        return best_iou, best_gt, lq_iou, lq_gt

    def _sparse_state(self, priors: Tensor, gt: GTBatch, layout: PriorLayout) -> State:
        """Steps 1, 2 and 4 over the pairs whose boxes can overlap (all others have IoU 0)."""
        b, n = gt.batch_size, priors.shape[0]
        best_iou, best_gt = empty_state(b, n, priors.device, NO_GT_IOU)
        lq_iou, lq_gt = empty_state(b, n, priors.device, 0.0)
        best_iou, lq_iou = best_iou.flatten(), lq_iou.flatten()  # (B, N) -> (B*N,)
        best_gt, lq_gt = best_gt.flatten(), lq_gt.flatten()
        reach = [max(level.extent) for level in layout.levels]
        for chunk in gt_chunks(gt.num_gts, self.max_gt_chunk, batch=b, num_priors=n, device=priors.device):
            image, slot = valid_rows(gt.valid, chunk)  # (G,) each
            if image.numel() == 0:
                continue
            boxes = gt.boxes[image, slot]  # (G, 4)
            row, prior = window_pairs(layout, level_regions(layout, boxes, reach))  # (P,) each
            iou = aligned_iou(boxes[row], priors[prior])  # (P,)
            flat = image[row] * n + prior  # (P,) index into B*N
            c_iou, c_gt = scatter_max(b * n, flat, iou, slot[row], NO_GT_IOU)
            best_iou, best_gt = merge_best(best_iou, best_gt, c_iou, c_gt)
            if self.match_low_quality:
                gt_best = iou.new_zeros(boxes.shape[0]).scatter_reduce(0, row, iou, "amax")  # (G,)
                claims = (gt_best > 0) & (gt_best >= self.min_pos_iou)
                hits = claims[row] & (iou == gt_best[row])  # (P,)
                last = torch.full_like(best_gt, -1).scatter_reduce(0, flat[hits], row[hits], "amax")  # (B*N,)
                claimed = last >= 0
                lq_gt = torch.where(claimed, slot[last.clamp(min=0)], lq_gt)  # rows ascend with the slot
                lq_iou = torch.where(claimed, gt_best[last.clamp(min=0)], lq_iou)
        # A prior overlapping no GT (best IoU 0, or no pair) has IoU 0 with every valid GT: step 2
        # gives it the image's first valid GT, as the dense maximum does.
        first = first_valid(gt)[:, None].expand(b, n).flatten()  # (B,) -> (B*N,)
        none = (best_iou <= 0) & (first >= 0)
        best_iou = torch.where(none, torch.zeros_like(best_iou), best_iou)
        best_gt = torch.where(none, first, best_gt)
        return best_iou.view(b, n), best_gt.view(b, n), lq_iou.view(b, n), lq_gt.view(b, n)

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
