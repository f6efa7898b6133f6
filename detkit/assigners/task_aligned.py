"""Task-aligned assignment (TOOD, Feng et al. 2021; as used by YOLOv6/YOLOv8), batched."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from detkit.assigners.base import (
    AssignResult,
    GTBatch,
    TwoFormAssigner,
    check_predictions,
    empty_state,
    make_result,
    prepare_inputs,
)
from detkit.assigners.candidates import (
    PriorLayout,
    first_valid,
    level_regions,
    prior_layout,
    row_chunks,
    segment_ranks,
    take_rows,
    valid_rows,
    window_pairs,
)
from detkit.assigners.chunking import check_chunk, gt_chunks, merge_best, scatter_max
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


class TaskAlignedAssigner(TwoFormAssigner):
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

    The candidate-sparse form (``assign`` on grid priors) lists each GT's candidates of step 1 by
    grid arithmetic and computes IoUs and metrics for them only; step 3 ranks them per GT by
    (metric, prior index). Where ``keep_zero_metric`` leaves the choice to ``torch.topk``'s order
    among equal metrics (a GT with fewer than ``topk`` positive metrics and a zero-metric
    candidate, or a tie at the k-th metric), that GT's full row of N metrics is built and ranked by
    ``torch.topk`` itself, as in the dense form, so the two forms agree bit for bit.

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
        eps: added to the max metric in step 5.
        max_gt_chunk: process at most this many GTs at a time (bounds memory; same result); "auto"
            (default) picks it from the free memory of a CUDA device, none on CPU (chunking.auto_chunk).
    """

    uses_predictions: bool = True  # needs pred_scores (B, N, C) from the loss pipeline
    score_target = True  # the result's score_target is the normalised metric (step 5)

    def __init__(self, topk: int = 13, alpha: float = 1.0, beta: float = 6.0, iou_mode: str = "iou",
                 center_eps: float = 1e-9, resolve: str = "positives", eps: float = 1e-9,
                 center_min_side: float | None = None, keep_zero_metric: bool = False,
                 max_gt_chunk: int | str | None = "auto") -> None:
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

    def _assign(self, priors: Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor, *,
                num_level_priors: Sequence[int] | None, prior_strides: Tensor | None, pred_boxes: Tensor | None,
                pred_scores: Tensor | None, dense: bool) -> AssignResult:
        priors, gt = prepare_inputs(priors, gt_boxes, gt_labels, gt_mask)
        b, n = gt.batch_size, priors.shape[0]
        pred_boxes, scores = check_predictions(pred_boxes, pred_scores, b, n, gt, "TaskAlignedAssigner")
        x = self._inputs(priors, pred_boxes, scores, gt)
        layout = None if dense else prior_layout(priors, num_level_priors, prior_strides)
        num_pos, by_pos, by_cand = self._dense_state(x, gt) if layout is None else self._sparse_state(x, gt, layout)
        best_iou, best_gt = by_pos
        if self.resolve != "positives":  # step 4 for priors positive for several GTs
            several = num_pos > 1
            best_iou, best_gt = (torch.where(several, c, p) for c, p in zip(by_cand, by_pos))
        metric = torch.zeros_like(best_iou)
        image, prior = (best_gt >= 0).nonzero(as_tuple=True)  # the metric of each positive's pair
        if image.numel():
            metric[image, prior] = self._pair_values(x, image * gt.num_gts + best_gt[image, prior],
                                                     image * n + prior, prior)[1]
        target = self._normalised(best_gt, best_iou, metric, gt.num_gts)
        return make_result(best_gt, best_iou, gt, align_metric=metric, score_target=target)

    def _inputs(self, priors: Tensor, pred_boxes: Tensor, scores: Tensor, gt: GTBatch) -> _Inputs:
        boxes = gt.boxes.flatten(0, 1)  # (B, M, 4) -> (B*M, 4)
        return _Inputs(centres=(priors[:, :2] + priors[:, 2:]) / 2, pred_boxes=pred_boxes.flatten(0, 1),
                       scores=scores.flatten(), gt_boxes=boxes, cand_boxes=self._candidate_box(boxes),
                       labels=gt.labels.flatten().clamp(0, scores.shape[-1] - 1),  # padding rows may hold any label
                       valid=gt.valid.flatten(), num_classes=scores.shape[-1])

    def _pair_values(self, x: _Inputs, gt_row: Tensor, pred_row: Tensor,
                     prior: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Steps 1-2 for the pairs (GT ``gt_row``, prediction ``pred_row`` of prior ``prior``): index
        tensors into :class:`_Inputs`' tables that broadcast (a full ``(B, Mc, N)`` grid in the dense
        form, one entry per listed pair in the sparse one).

        Returns:
            ``(iou, metric, candidate)``, each of the broadcast shape; IoU and metric 0 off candidates.
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

    def _dense_state(self, x: _Inputs, gt: GTBatch) -> tuple[Tensor, tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """Steps 1-4 over every (GT, prior) pair, chunk by chunk: each prior's number of positive GTs,
        and its best ``(iou, gt)`` among its positive GTs and among the GTs step 4 may choose."""
        b, m, n = gt.batch_size, gt.num_gts, x.centres.shape[0]
        device = x.centres.device
        by_pos, by_cand = empty_state(b, n, device, NOT_POSITIVE), empty_state(b, n, device, NOT_POSITIVE)
        num_pos = torch.zeros(b, n, dtype=torch.long, device=device)
        image, prior = torch.arange(b, device=device)[:, None, None], torch.arange(n, device=device)  # (B, 1, 1), (N,)
        for chunk in gt_chunks(m, self.max_gt_chunk, batch=b, num_priors=n, device=device):
            slot = torch.arange(chunk.start, chunk.stop, device=device)[:, None]  # (Mc, 1)
            iou, metric, cand = self._pair_values(x, image * m + slot, image * n + prior, prior)  # (B, Mc, N) each
            pos = self._dense_topk(metric) & cand
            num_pos += pos.sum(dim=1)
            by_pos = self._merge(by_pos, iou, pos, chunk.start)
            if self.resolve != "positives":
                allowed = cand if self.resolve == "in_gts" else gt.valid[:, chunk, None].expand_as(cand)
                by_cand = self._merge(by_cand, iou, allowed, chunk.start)
        return num_pos, by_pos, by_cand

    def _dense_topk(self, metric: Tensor) -> Tensor:
        """Step 3 on rows of N metrics ``(..., N)``: the kept priors (TOOD's rule also needs a metric > 0)."""
        k = min(self.topk, metric.shape[-1])
        top, idx = metric.topk(k, dim=-1)  # (..., k)
        if not self.keep_zero_metric:  # torch.topk's tie order kept as it is otherwise (see step 3)
            tied = ((metric >= top[..., -1:]).sum(-1) > k) & (top[..., -1] > 0)  # ties at a positive k-th metric
            if bool(tied.any()):
                idx[tied] = (-metric[tied]).sort(dim=-1, stable=True).indices[:, :k]
        kept = torch.zeros_like(metric, dtype=torch.bool).scatter_(-1, idx, True)
        return kept if self.keep_zero_metric else kept & (metric > 0)

    @staticmethod
    def _merge(state: tuple[Tensor, Tensor], iou: Tensor, allowed: Tensor, offset: int) -> tuple[Tensor, Tensor]:
        """Merge one chunk's ``(B, Mc, N)`` pairs where ``allowed`` into the running best (step 4)."""
        value = torch.where(allowed, iou, torch.full_like(iou, NOT_POSITIVE))  # (B, Mc, N)
        c_iou, c_gt = value.max(dim=1)  # (B, N); first maximum on ties
        c_gt = torch.where(c_iou > NOT_POSITIVE, c_gt + offset, torch.full_like(c_gt, -1))
        return merge_best(*state, c_iou, c_gt)

    def _sparse_state(self, x: _Inputs, gt: GTBatch,
                      layout: PriorLayout) -> tuple[Tensor, tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """Steps 1-4 over each GT's candidates only (see :meth:`_dense_state` for what is returned)."""
        b, m, n = gt.batch_size, gt.num_gts, x.centres.shape[0]
        device = x.centres.device
        by_pos = [t.flatten() for t in empty_state(b, n, device, NOT_POSITIVE)]  # (B*N,) each
        by_cand = [t.flatten() for t in empty_state(b, n, device, NOT_POSITIVE)]
        num_pos = torch.zeros(b * n, dtype=torch.long, device=device)
        for chunk in gt_chunks(m, self.max_gt_chunk, batch=b, num_priors=n, device=device):
            image, slot = valid_rows(gt.valid, chunk)  # (G,) each
            regions = x.cand_boxes[image * m + slot]  # (G, 4)
            row, prior = window_pairs(layout, level_regions(layout, regions, [0.0] * len(layout.levels)))
            pair_gt, flat = image[row] * m + slot[row], image[row] * n + prior  # (P,) each
            iou, metric, cand = self._pair_values(x, pair_gt, flat, prior)
            row, prior, flat, iou, metric = row[cand], prior[cand], flat[cand], iou[cand], metric[cand]
            pos = self._sparse_topk(row, prior, metric, image.shape[0], n)
            owner = slot[row]
            num_pos.index_add_(0, flat[pos], torch.ones_like(flat[pos]))
            by_pos = merge_best(*by_pos, *scatter_max(b * n, flat[pos], iou[pos], owner[pos], NOT_POSITIVE))
            if self.resolve != "positives":
                by_cand = merge_best(*by_cand, *scatter_max(b * n, flat, iou, owner, NOT_POSITIVE))
        if self.resolve == "all_gts":  # every valid GT competes: IoU 0 everywhere goes to the first one
            first = first_valid(gt)[:, None].expand(b, n).flatten()  # (B,) -> (B*N,)
            none = (by_cand[0] <= 0) & (first >= 0)
            by_cand = [torch.where(none, torch.zeros_like(by_cand[0]), by_cand[0]),
                       torch.where(none, first, by_cand[1])]
        return num_pos.view(b, n), tuple(t.view(b, n) for t in by_pos), tuple(t.view(b, n) for t in by_cand)

    def _sparse_topk(self, row: Tensor, prior: Tensor, metric: Tensor, num_rows: int, num_priors: int) -> Tensor:
        """Step 3 on the candidate pairs ``(row, prior, metric)`` of ``num_rows`` GTs: ``Tensor[P]`` bool, positive."""
        k = min(self.topk, num_priors)
        rank = segment_ranks(row, metric, num_rows, descending=True)  # (P,) by (metric, prior index)
        if not self.keep_zero_metric:
            return (rank < k) & (metric > 0)
        # torch.topk's order decides among equal metrics at the k-th place, zeros included: such GTs
        # are ranked on their full row of N metrics (0 off candidates), as in the dense form.
        count = torch.zeros(num_rows, 2, dtype=torch.long, device=metric.device)
        count.index_put_((row, (metric > 0).long()), torch.ones_like(row), accumulate=True)  # zero / positive metrics
        at_k, after_k = rank == k - 1, rank == k
        kth = metric.new_full((num_rows,), -1.0).index_put_((row[at_k],), metric[at_k])
        tied = torch.zeros(num_rows, dtype=torch.bool, device=metric.device)
        tied[row[after_k]] = metric[after_k] == kth[row[after_k]]
        redo = torch.where(count[:, 1] < k, count[:, 0] > 0, tied)  # (G,)
        pos = (rank < k) & ~redo[row]
        if bool(redo.any()):
            again = redo[row]
            pos[again] = self._full_rows(row[again], prior[again], metric[again], num_priors)
        return pos

    def _full_rows(self, row: Tensor, prior: Tensor, metric: Tensor, num_priors: int) -> Tensor:
        """Step 3 of the dense form for the pairs ``(row, prior, metric)`` of a few GTs: their full rows
        of N metrics (0 off the listed candidates) ranked by ``torch.topk``; ``Tensor[P]`` bool, kept."""
        rows, local = torch.unique_consecutive(row, return_inverse=True)  # rows ascend: pairs come GT by GT
        kept = torch.empty_like(row, dtype=torch.bool)
        for part in row_chunks(torch.arange(rows.shape[0], device=row.device), num_priors):
            sel = (local >= part[0]) & (local <= part[-1])
            full = metric.new_zeros(part.shape[0], num_priors)
            full[local[sel] - part[0], prior[sel]] = metric[sel]
            kept[sel] = self._dense_topk(full)[local[sel] - part[0], prior[sel]]
        return kept

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
