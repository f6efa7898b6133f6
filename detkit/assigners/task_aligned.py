"""Task-aligned assignment (TOOD, Feng et al. 2021; as used by YOLOv6/YOLOv8), batched."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from detkit.assigners.base import (
    AssignResult,
    GTBatch,
    check_predictions,
    empty_state,
    make_result,
    prepare_inputs,
)
from detkit.assigners.chunking import check_chunk, gt_chunks, merge_best
from detkit.exact_math import exact_pow
from detkit.boxes import IOU_MODES, pairwise_iou

__all__ = ["TaskAlignedAssigner"]

NOT_POSITIVE = -1.0  # IoU stored for pairs that are not positive (below any real IoU)
RESOLVE_RULES = ("positives", "in_gts", "all_gts")


class TaskAlignedAssigner:
    """Task-aligned assignment: the top-``topk`` priors of each GT by ``score**alpha * IoU**beta``.

    Steps (all images and GTs at once; chunks of GTs when ``max_gt_chunk``):

    1. Candidates of a GT: priors whose centre lies inside it (every side margin ``> center_eps``).
       With ``center_min_side`` (Ultralytics 8.4: its second stride), the box tested is the GT's
       ``(cx, cy, w, h)`` with each side shorter than ``center_min_side`` set to it, as corners
       ``c -/+ side / 2``; the IoU of step 2 still uses the GT box itself.
    2. For candidates, IoU of the *predicted* box with the GT (``iou_mode``: ``iou`` as in TOOD,
       ``ciou`` as in YOLOv8, clamped at 0; its arctangent may make chunked results differ in the
       last bit) and align metric ``s**alpha * IoU**beta``, ``s`` the
       predicted probability of the GT's class; 0 for non-candidates.
    3. Each GT keeps its ``min(topk, N)`` priors of largest metric (ties: lower prior index); those
       that are candidates with a metric ``> 0`` are its positives (TOOD's rule). With
       ``keep_zero_metric`` every kept candidate is positive, metric 0 included (Ultralytics 8.4);
       ties at the k-th metric (zeros, typically) then follow ``torch.topk``'s own order, as in
       Ultralytics, which is what makes the kept set the same as Ultralytics' on the same inputs.
    4. A prior positive for several GTs goes to the GT of highest IoU (ties: lowest GT index), among
       the GTs it is positive for (``resolve="positives"``, TOOD), among all GTs whose box holds
       its centre, positive for it or not (``resolve="in_gts"``), or among all valid GTs with the
       IoU counted 0 where the GT's box does not hold the centre (``resolve="all_gts"``,
       Ultralytics 8.4's ``select_highest_overlaps``: when every such IoU is 0 the prior goes to
       the first valid GT, which is Ultralytics' GT row 0 whenever padding rows trail, as in its
       batches). A prior positive for one GT keeps it in every rule.
    5. Normalised target: per GT, ``t = metric / max metric * max IoU``, maxima over the priors
       finally assigned to that GT (``eps`` guards the division).

    Extra result fields: ``align_metric`` (the metric of the assigned pair) and ``score_target``
    (``t`` of step 5), both ``Tensor[B, N]``, 0 where not positive; ``iou`` is the predicted box's.
    Ignores nothing. Needs ``pred_boxes`` and ``pred_scores`` (probabilities).

    Args:
        topk: priors kept per GT.
        alpha, beta: exponents of the score and the IoU in the metric.
        iou_mode: ``iou`` or ``ciou``.
        center_eps: least distance (px) from a candidate's centre to every GT side (YOLOv8: 1e-9).
        center_min_side: least GT side (px) of the candidate test (step 1); None = the GT as it is.
        keep_zero_metric: kept candidates are positive even at metric 0 (step 3).
        resolve: ``positives``, ``in_gts`` or ``all_gts`` (step 4).
        eps: added to the max metric in step 5.
        max_gt_chunk: process at most this many GTs at a time (bounds memory; same result).
    """

    uses_predictions: bool = True  # needs pred_scores (B, N, C) from the loss pipeline

    def __init__(self, topk: int = 13, alpha: float = 1.0, beta: float = 6.0, iou_mode: str = "iou",
                 center_eps: float = 1e-9, resolve: str = "positives", eps: float = 1e-9,
                 center_min_side: float | None = None, keep_zero_metric: bool = False,
                 max_gt_chunk: int | None = None) -> None:
        if not isinstance(topk, int) or topk < 1:
            raise ValueError(f"topk must be a positive int, got {topk!r}")
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
        self.max_gt_chunk = check_chunk(max_gt_chunk)

    def __repr__(self) -> str:
        return (f"TaskAlignedAssigner(topk={self.topk}, alpha={self.alpha}, beta={self.beta}, "
                f"iou_mode={self.iou_mode!r}, resolve={self.resolve!r}, center_min_side={self.center_min_side}, "
                f"keep_zero_metric={self.keep_zero_metric})")

    def assign(self, priors: Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor, *,
               num_level_priors: Sequence[int] | None = None, prior_strides: Tensor | None = None,
               pred_boxes: Tensor | None = None, pred_scores: Tensor | None = None) -> AssignResult:
        """Assign; needs ``pred_boxes`` and ``pred_scores`` (see :class:`AssignResult`)."""
        priors, gt = prepare_inputs(priors, gt_boxes, gt_labels, gt_mask)
        b, n = gt.batch_size, priors.shape[0]
        pred_boxes, scores = check_predictions(pred_boxes, pred_scores, b, n, gt, "TaskAlignedAssigner")
        centres = (priors[:, :2] + priors[:, 2:]) / 2  # (N, 2)
        scores_t = scores.transpose(1, 2).contiguous()  # (B, N, C) -> (B, C, N), rows of N for gather
        # Running best (IoU, GT, metric) per prior among its positive GTs, and among all GTs whose
        # box holds its centre (used by resolve="in_gts" for priors positive for several GTs).
        by_pos = self._state(b, n, priors.device)
        by_cand = self._state(b, n, priors.device)
        num_pos = torch.zeros(b, n, dtype=torch.long, device=priors.device)
        for chunk in gt_chunks(gt.num_gts, self.max_gt_chunk):
            iou, metric, pos, cand = self._chunk_metrics(centres, pred_boxes, scores_t, gt, chunk)
            num_pos += pos.sum(dim=1)
            by_pos = self._merge(by_pos, iou, metric, pos, chunk.start)
            if self.resolve != "positives":
                allowed = cand if self.resolve == "in_gts" else gt.valid[:, chunk, None].expand_as(cand)
                by_cand = self._merge(by_cand, iou, metric, allowed, chunk.start)
        best_iou, best_gt, best_metric = by_pos
        if self.resolve != "positives":
            several = num_pos > 1
            best_iou, best_gt, best_metric = (torch.where(several, c, p) for c, p in zip(by_cand, by_pos))
        target = self._normalised(best_gt, best_iou, best_metric, gt.num_gts)
        return make_result(best_gt, best_iou, gt, align_metric=best_metric, score_target=target)

    @staticmethod
    def _state(b: int, n: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """Empty running best: ``(iou, gt, metric)``, ``Tensor[B, N]`` each."""
        iou, gt = empty_state(b, n, device, NOT_POSITIVE)
        return iou, gt, torch.zeros(b, n, device=device)

    @staticmethod
    def _merge(state: tuple[Tensor, Tensor, Tensor], iou: Tensor, metric: Tensor, allowed: Tensor,
               offset: int) -> tuple[Tensor, Tensor, Tensor]:
        """Merge one chunk's ``(B, Mc, N)`` pairs where ``allowed`` into the running best (step 4)."""
        value = torch.where(allowed, iou, torch.full_like(iou, NOT_POSITIVE))  # (B, Mc, N)
        c_iou, c_gt = value.max(dim=1)  # (B, N); first maximum on ties
        c_metric = metric.gather(1, c_gt[:, None]).squeeze(1)
        c_gt = torch.where(c_iou > NOT_POSITIVE, c_gt + offset, torch.full_like(c_gt, -1))
        best_iou, best_gt, best_metric = state
        best_metric = torch.where(c_iou > best_iou, c_metric, best_metric)
        best_iou, best_gt = merge_best(best_iou, best_gt, c_iou, c_gt)
        return best_iou, best_gt, best_metric

    def _chunk_metrics(self, centres: Tensor, pred_boxes: Tensor, scores_t: Tensor, gt: GTBatch,
                       chunk: slice) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Steps 1-3 for one chunk: ``(iou, metric, positive, candidate)``, ``Tensor[B, Mc, N]`` each."""
        boxes = gt.boxes[:, chunk]  # (B, Mc, 4)
        cx, cy = centres[:, 0], centres[:, 1]  # (N,)
        x1, y1, x2, y2 = (boxes[..., i:i + 1] for i in range(4))  # (B, Mc, 1) each
        if self.center_min_side is not None:
            x1, y1, x2, y2 = self._enlarged(boxes)
        e = self.center_eps
        cand = (cx - x1 > e) & (cy - y1 > e) & (x2 - cx > e) & (y2 - cy > e) & gt.valid[:, chunk, None]  # (B, Mc, N)
        if self.iou_mode == "iou":
            iou = pairwise_iou(boxes, pred_boxes)  # (B, Mc, N)
        else:
            iou = pairwise_iou(boxes, pred_boxes, mode=self.iou_mode).clamp(min=0)  # (B, Mc, N)
        iou = iou.masked_fill(~cand, 0.0)
        labels = gt.labels[:, chunk].clamp(0, scores_t.shape[1] - 1)  # padding rows may hold any label
        labels = labels[:, :, None].expand(-1, -1, centres.shape[0])  # (B, Mc) -> (B, Mc, N)
        score = scores_t.gather(1, labels)  # (B, C, N) -> (B, Mc, N)
        metric = (exact_pow(score, self.alpha) * exact_pow(iou, self.beta)).masked_fill(~cand, 0.0)
        k = min(self.topk, metric.shape[-1])
        kept = torch.zeros_like(cand)
        top, idx = metric.topk(k, dim=-1)  # (B, Mc, k)
        if not self.keep_zero_metric:  # torch.topk's tie order kept as it is otherwise (see step 3)
            tied = ((metric >= top[..., -1:]).sum(-1) > k) & (top[..., -1] > 0)  # ties at a positive k-th metric
            if bool(tied.any()):
                idx[tied] = (-metric[tied]).sort(dim=-1, stable=True).indices[:, :k]
        kept.scatter_(-1, idx, True)
        pos = kept & cand if self.keep_zero_metric else kept & cand & (metric > 0)
        return iou, metric, pos, cand

    def _enlarged(self, boxes: Tensor) -> tuple[Tensor, ...]:
        """Step 1's box with sides of at least ``center_min_side``: four ``Tensor[B, Mc, 1]`` corners."""
        centre = (boxes[..., :2] + boxes[..., 2:]) / 2  # (B, Mc, 2)
        side = boxes[..., 2:] - boxes[..., :2]
        side = torch.where(side < self.center_min_side, torch.full_like(side, self.center_min_side), side)
        lt, rb = centre - side / 2, centre + side / 2
        return lt[..., 0:1], lt[..., 1:2], rb[..., 0:1], rb[..., 1:2]

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
