"""FCOS's assignment (Tian et al., ICCV 2019): centre sampling and a regression range per level, batched."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from detkit.anchors import PriorGrid
from detkit.assigners.base import AssignResult, GTBatch, Priors, assigned_boxes, make_result, prepare
from detkit.assigners.candidates import PriorBest, candidate_tables, gt_rows, level_regions
from detkit.assigners.threads import limit_assign_threads
from detkit.boxes import aligned_iou

__all__ = ["FCOSAssigner"]

# FCOS's ranges for P3 and P4, the last of three levels open (mmdet's INF).
DEFAULT_SCALE_RANGES = ((-1.0, 64.0), (64.0, 128.0), (128.0, 1e8))


class FCOSAssigner:
    """FCOS: a location is positive for a GT whose (centre region) holds it and whose size fits the
    location's level.

    Steps (all images and GTs at once), over a candidate table of (GT, prior) pairs
    (:mod:`detkit.assigners.candidates`): on a :class:`~detkit.anchors.PriorGrid`, the priors of each level
    whose centre lies in the GT box (with centre sampling: in its centre region); on a bare tensor of
    priors, all pairs. Steps 1-3 are the exact test, on the listed pairs.

    1. Regression distances of each prior centre ``(x, y)`` to each GT: ``l = x - x1``,
       ``t = y - y1``, ``r = x2 - x``, ``b = y2 - y``.
    2. Inside test: with ``center_sampling_radius`` the region is the GT centre
       ``+/- radius * stride`` (the prior's stride), clipped to the GT box; without it, the GT
       box. The prior is inside when its centre is strictly inside the region (every distance > 0).
    3. Scale test: ``lo <= max(l, t, r, b) <= hi`` with ``(lo, hi)`` the prior's level's entry of
       ``scale_ranges``.
    4. A prior passing both tests for several GTs goes to the GT of smallest area (ties: lowest
       GT index).

    ``iou`` of the result is the IoU of the prior box with its GT. FCOS ignores nothing. Needs the levels
    (for the ranges) and the strides (for the centre region): a PriorGrid has them; with a bare tensor pass
    ``num_level_priors`` and ``prior_strides``.

    Args:
        center_sampling_radius: radius of the centre region in strides (1.5 in FCOS's improved
            version and mmdet); None: the whole box (the paper's first version).
        scale_ranges: ``(lo, hi)`` of ``max(l, t, r, b)`` in pixels, one pair per level.
    """

    uses_predictions: bool = False  # box-only: the loss pipeline need not compute pred_scores

    def __init__(self, center_sampling_radius: float | None = 1.5,
                 scale_ranges: Sequence[Sequence[float]] = DEFAULT_SCALE_RANGES) -> None:
        if center_sampling_radius is not None and not center_sampling_radius > 0:
            raise ValueError(f"center_sampling_radius must be > 0 (in strides) or None, got {center_sampling_radius!r}")
        ranges = [tuple(float(v) for v in pair) for pair in scale_ranges]
        if not ranges or any(len(pair) != 2 or not pair[0] < pair[1] for pair in ranges):
            raise ValueError(f"scale_ranges must be (lo, hi) pairs with lo < hi, one per level, got {scale_ranges!r}")
        self.center_sampling_radius = None if center_sampling_radius is None else float(center_sampling_radius)
        self.scale_ranges = ranges

    def __repr__(self) -> str:
        return f"FCOSAssigner(center_sampling_radius={self.center_sampling_radius}, scale_ranges={self.scale_ranges})"

    @limit_assign_threads
    def assign(self, priors: PriorGrid | Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor, *,
               num_level_priors: Sequence[int] | None = None, prior_strides: Tensor | None = None,
               pred_boxes: Tensor | None = None, pred_scores: Tensor | None = None) -> AssignResult:
        """Assign (see :class:`~detkit.assigners.base.Assigner`); ``pred_*`` are not used."""
        p, gt = prepare(priors, gt_boxes, gt_labels, gt_mask, num_level_priors=num_level_priors,
                        prior_strides=prior_strides)
        counts = p.level_counts("FCOSAssigner")
        if len(counts) != len(self.scale_ranges):
            raise ValueError(f"FCOSAssigner has {len(self.scale_ranges)} scale_ranges but the priors have "
                             f"{len(counts)} levels; give one (lo, hi) pair per level")
        strides = p.strides_for("FCOSAssigner")
        sizes = torch.tensor(counts, device=p.device)
        ranges = torch.tensor(self.scale_ranges, device=p.device)  # (L, 2)
        lo, hi = ranges.repeat_interleave(sizes, dim=0).unbind(-1)  # (L, 2) -> (N, 2) -> (N,) each
        best_gt = self._best(p, strides, lo, hi, gt)
        iou = aligned_iou(p.boxes, assigned_boxes(gt, best_gt))  # (N, 4) with (B, N, 4) -> (B, N)
        return make_result(best_gt, iou, gt)

    def _best(self, p: Priors, strides: Tensor, lo: Tensor, hi: Tensor, gt: GTBatch) -> Tensor:
        """Steps 1-4 over the candidate table: ``Tensor[B, N]`` GT index, -1 where none."""
        best = PriorBest(gt.batch_size, p.num_priors, p.device, float("inf"), lowest=True)
        image, slot = gt_rows(gt.valid)  # (G,) each
        boxes = gt.boxes[image, slot]  # (G, 4)
        regions = None if p.grid is None else self.regions(p.grid, boxes)
        for table in candidate_tables(p, gt, regions, rows=(image, slot)):
            prior = table.prior
            pair_boxes = gt.boxes[table.image, table.slot].index_select(0, table.row)  # (Gc, 4) -> (P, 4)
            pos = self._positives(p.centres[prior], strides[prior], lo[prior], hi[prior], pair_boxes)  # (P,)
            area = (pair_boxes[:, 2] - pair_boxes[:, 0]) * (pair_boxes[:, 3] - pair_boxes[:, 1])  # (P,)
            best.update(table.pred_index, torch.where(pos, area, torch.inf), table.owner)
        return best.result()[1]

    def regions(self, grid: PriorGrid, boxes: Tensor) -> Tensor:
        """``Tensor[G, L, 4]``: where a prior's centre must lie to be a candidate of each GT box ``(G, 4)``:
        the box, or with centre sampling its centre +/- radius * stride (the level's)."""
        if self.center_sampling_radius is None:
            return level_regions(grid, boxes, [0.0] * len(grid.levels))
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # (G, 2)
        return level_regions(grid, torch.cat([centre, centre], 1),
                             [self.center_sampling_radius * level.stride for level in grid.levels])

    def _positives(self, centres: Tensor, strides: Tensor, lo: Tensor, hi: Tensor, boxes: Tensor) -> Tensor:
        """Steps 1-3 for prior centres ``(..., 2)`` (with their strides and ranges ``(...)``) and GT
        boxes ``(..., 4)``, one value per listed pair: ``(P, 2)`` against ``(P, 4)`` gives ``Tensor[P]`` bool."""
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
