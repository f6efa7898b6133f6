"""FCOS's assignment (Tian et al., ICCV 2019): centre sampling and a regression range per level, batched."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from detkit.assigners.base import (
    AssignResult,
    GTBatch,
    TwoFormAssigner,
    assigned_boxes,
    check_level_counts,
    check_strides,
    empty_state,
    make_result,
    prepare_inputs,
)
from detkit.assigners.candidates import PriorLayout, level_regions, prior_layout, valid_rows, window_pairs
from detkit.assigners.chunking import check_chunk, gt_chunks, merge_best, scatter_max
from detkit.boxes import aligned_iou

__all__ = ["FCOSAssigner"]

# FCOS's ranges for P3 and P4, the last of three levels open (mmdet's INF).
DEFAULT_SCALE_RANGES = ((-1.0, 64.0), (64.0, 128.0), (128.0, 1e8))


class FCOSAssigner(TwoFormAssigner):
    """FCOS: a location is positive for a GT whose (centre region) holds it and whose size fits the
    location's level.

    Steps (all images and GTs at once; chunks of GTs when ``max_gt_chunk``):

    1. Regression distances of each prior centre ``(x, y)`` to each GT: ``l = x - x1``,
       ``t = y - y1``, ``r = x2 - x``, ``b = y2 - y``.
    2. Inside test: with ``center_sampling_radius`` the region is the GT centre
       ``+/- radius * stride`` (the prior's stride), clipped to the GT box; without it, the GT
       box. The prior is inside when its centre is strictly inside the region (every distance > 0).
    3. Scale test: ``lo <= max(l, t, r, b) <= hi`` with ``(lo, hi)`` the prior's level's entry of
       ``scale_ranges``.
    4. A prior passing both tests for several GTs goes to the GT of smallest area (ties: lowest
       GT index).

    The candidate-sparse form (``assign`` on grid priors) runs steps 1-3 only on the priors of each
    level whose centre lies in the GT box (with centre sampling: in its centre region).

    ``iou`` of the result is the IoU of the prior box with its GT. FCOS ignores nothing. Needs
    ``num_level_priors`` (for the ranges) and ``prior_strides`` (for the centre region).

    Args:
        center_sampling_radius: radius of the centre region in strides (1.5 in FCOS's improved
            version and mmdet); None: the whole box (the paper's first version).
        scale_ranges: ``(lo, hi)`` of ``max(l, t, r, b)`` in pixels, one pair per level.
        max_gt_chunk: process at most this many GTs at a time (bounds memory; same result); "auto"
            (default) picks it from the free memory of a CUDA device, none on CPU (chunking.auto_chunk).
    """

    uses_predictions: bool = False  # box-only: the loss pipeline need not compute pred_scores

    def __init__(self, center_sampling_radius: float | None = 1.5,
                 scale_ranges: Sequence[Sequence[float]] = DEFAULT_SCALE_RANGES,
                 max_gt_chunk: int | str | None = "auto") -> None:
        if center_sampling_radius is not None and not center_sampling_radius > 0:
            raise ValueError(f"center_sampling_radius must be > 0 (in strides) or None, got {center_sampling_radius!r}")
        ranges = [tuple(float(v) for v in pair) for pair in scale_ranges]
        if not ranges or any(len(pair) != 2 or not pair[0] < pair[1] for pair in ranges):
            raise ValueError(f"scale_ranges must be (lo, hi) pairs with lo < hi, one per level, got {scale_ranges!r}")
        self.center_sampling_radius = None if center_sampling_radius is None else float(center_sampling_radius)
        self.scale_ranges = ranges
        self.max_gt_chunk = check_chunk(max_gt_chunk)

    def __repr__(self) -> str:
        return f"FCOSAssigner(center_sampling_radius={self.center_sampling_radius}, scale_ranges={self.scale_ranges})"

    def _assign(self, priors: Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor, *,
                num_level_priors: Sequence[int] | None, prior_strides: Tensor | None, pred_boxes: Tensor | None,
                pred_scores: Tensor | None, dense: bool) -> AssignResult:
        priors, gt = prepare_inputs(priors, gt_boxes, gt_labels, gt_mask)
        b, n = gt.batch_size, priors.shape[0]
        counts = check_level_counts(num_level_priors, n, "FCOSAssigner")
        if len(counts) != len(self.scale_ranges):
            raise ValueError(f"FCOSAssigner has {len(self.scale_ranges)} scale_ranges but the priors have "
                             f"{len(counts)} levels; give one (lo, hi) pair per level")
        strides = check_strides(prior_strides, n, "FCOSAssigner")
        sizes = torch.tensor(counts, device=priors.device)
        ranges = torch.tensor(self.scale_ranges, device=priors.device)  # (L, 2)
        lo, hi = ranges.repeat_interleave(sizes, dim=0).unbind(-1)  # (L, 2) -> (N, 2) -> (N,) each
        centres = (priors[:, :2] + priors[:, 2:]) / 2  # (N, 2)
        layout = None if dense else prior_layout(priors, counts, strides)
        best_gt = (self._dense_best(centres, strides, lo, hi, gt) if layout is None
                   else self._sparse_best(centres, strides, lo, hi, gt, layout))
        iou = aligned_iou(priors, assigned_boxes(gt, best_gt))  # (N, 4) with (B, N, 4) -> (B, N)
        return make_result(best_gt, iou, gt)

    def _dense_best(self, centres: Tensor, strides: Tensor, lo: Tensor, hi: Tensor, gt: GTBatch) -> Tensor:
        """Steps 1-4 over every (GT, prior) pair: ``Tensor[B, N]`` GT index, -1 where none."""
        best_area, best_gt = empty_state(gt.batch_size, centres.shape[0], centres.device, float("inf"))
        for chunk in gt_chunks(gt.num_gts, self.max_gt_chunk, batch=gt.batch_size, num_priors=centres.shape[0],
                               device=centres.device):
            boxes = gt.boxes[:, chunk]  # (B, Mc, 4)
            pos = self._positives(centres, strides, lo, hi, boxes[:, :, None, :]) & gt.valid[:, chunk, None]
            area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])  # (B, Mc)
            value = torch.where(pos, area[:, :, None], torch.full_like(pos, float("inf"), dtype=area.dtype))
            c_area, c_gt = value.min(dim=1)  # (B, N), first minimum on ties
            c_gt = torch.where(torch.isfinite(c_area), c_gt + chunk.start, torch.full_like(c_gt, -1))
            best_area, best_gt = merge_best(best_area, best_gt, c_area, c_gt, lower_is_better=True)
        return best_gt

    def _sparse_best(self, centres: Tensor, strides: Tensor, lo: Tensor, hi: Tensor, gt: GTBatch,
                     layout: PriorLayout) -> Tensor:
        """Steps 1-4 over the priors in each GT's box (or centre region) only."""
        b, n = gt.batch_size, centres.shape[0]
        best_area, best_gt = empty_state(b, n, centres.device, float("inf"))
        best_area, best_gt = best_area.flatten(), best_gt.flatten()  # (B, N) -> (B*N,)
        for chunk in gt_chunks(gt.num_gts, self.max_gt_chunk, batch=gt.batch_size, num_priors=centres.shape[0],
                               device=centres.device):
            image, slot = valid_rows(gt.valid, chunk)  # (G,) each
            boxes = gt.boxes[image, slot]  # (G, 4)
            row, prior = window_pairs(layout, self._regions(layout, boxes))  # (P,) each
            pos = self._positives(centres[prior], strides[prior], lo[prior], hi[prior], boxes[row])  # (P,)
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # (G,)
            c_area, c_gt = scatter_max(b * n, image[row] * n + prior, torch.where(pos, -area[row], -torch.inf),
                                       slot[row], -torch.inf)  # the largest -area is the smallest area
            best_area, best_gt = merge_best(best_area, best_gt, -c_area, c_gt, lower_is_better=True)
        return best_gt.view(b, n)

    def _regions(self, layout: PriorLayout, boxes: Tensor) -> Tensor:
        """``Tensor[G, L, 4]``: the GT box, or with centre sampling its centre +/- radius * stride."""
        if self.center_sampling_radius is None:
            return level_regions(layout, boxes, [0.0] * len(layout.levels))
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # (G, 2)
        return level_regions(layout, torch.cat([centre, centre], 1),
                             [self.center_sampling_radius * level.stride for level in layout.levels])

    def _positives(self, centres: Tensor, strides: Tensor, lo: Tensor, hi: Tensor, boxes: Tensor) -> Tensor:
        """Steps 1-3 for prior centres ``(..., 2)`` (with their strides and ranges ``(...)``) and GT
        boxes ``(..., 4)``, broadcast: ``(N, 2)`` against ``(B, Mc, 1, 4)`` gives ``Tensor[B, Mc, N]``
        bool, ``(P, 2)`` against ``(P, 4)`` one value per listed pair."""
        x, y = centres[..., 0], centres[..., 1]
        x1, y1, x2, y2 = boxes.unbind(-1)
        left, top, right, bottom = x - x1, y - y1, x2 - x, y2 - y
        if self.center_sampling_radius is None:
            inside = (left > 0) & (top > 0) & (right > 0) & (bottom > 0)
        else:
            radius = self.center_sampling_radius * strides
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            rx1, ry1 = torch.maximum(cx - radius, x1), torch.maximum(cy - radius, y1)
            rx2, ry2 = torch.minimum(cx + radius, x2), torch.minimum(cy + radius, y2)
            inside = (x - rx1 > 0) & (y - ry1 > 0) & (rx2 - x > 0) & (ry2 - y > 0)
        reach = torch.maximum(torch.maximum(left, top), torch.maximum(right, bottom))
        return inside & (reach >= lo) & (reach <= hi)
