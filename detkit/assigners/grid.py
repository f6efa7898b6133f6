"""Grid assignment of YOLOv3 / YOLOv4 (darknet's ``yolo_layer``), batched over images and GTs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from detkit.anchors import PriorGrid
from detkit.assigners.base import AssignResult, GTBatch, Priors, assigned_boxes, make_result, prepare
from detkit.assigners.candidates import candidate_tables, gt_rows
from detkit.assigners.max_iou import overlap_regions
from detkit.assigners.threads import limit_assign_threads
from detkit.boxes import aligned_iou

__all__ = ["GridAnchors", "GridAssigner", "grid_anchors"]


@dataclass
class GridAnchors:
    """The anchors of a :class:`~detkit.anchors.PriorGrid`, one entry per anchor of every (non-empty) level:
    ``K`` anchors over all levels, what the cell-arithmetic rules (grid, YOLOv5) read.

    Attributes:
        anchor_wh: ``Tensor[K, 2]`` anchor widths and heights, level by level (of the first cell's boxes).
        stride, width, height, start, num_anchors: ``Tensor[K]`` per anchor: its level's stride,
            grid width and height (cells), first prior index, and anchors per cell.
        anchor_id: ``Tensor[K]`` long, the anchor's position within its cell.
    """

    anchor_wh: Tensor
    stride: Tensor
    width: Tensor
    height: Tensor
    start: Tensor
    num_anchors: Tensor
    anchor_id: Tensor

    def prior_index(self, centres: Tensor) -> Tensor:
        """Index of the prior of each anchor in the cell containing each centre.

        Args:
            centres: ``Tensor[B, M, 2]`` (cx, cy) in pixels; centres off the grid use the nearest
                edge cell.

        Returns:
            ``Tensor[B, M, K]`` long prior indices.
        """
        cell = torch.floor(centres[:, :, None, :] / self.stride[:, None]).long()  # (B, M, K, 2)
        gx = torch.minimum(cell[..., 0].clamp(min=0), self.width - 1)  # (B, M, K)
        gy = torch.minimum(cell[..., 1].clamp(min=0), self.height - 1)
        return self.start + (gy * self.width + gx) * self.num_anchors + self.anchor_id


def grid_anchors(priors: Priors, who: str) -> GridAnchors:
    """The :class:`GridAnchors` of the call's PriorGrid (``who`` names the rule in the error).

    Raises:
        ValueError: the priors are a bare tensor: the rule places a GT in the cell of each level that
            holds its centre, which needs the grid itself (``anchors.grid_priors`` makes it).
    """
    grid = priors.grid
    if grid is None:
        raise ValueError(f"{who} needs the priors as a PriorGrid (what anchors.grid_priors returns and heads "
                         f"pass): its rule finds the cell holding each GT centre on each level; a bare tensor of "
                         f"prior boxes does not say where the cells are")
    parts: dict[str, list[Tensor]] = {k: [] for k in ("wh", "stride", "w", "h", "start", "a", "id")}
    for level in grid.levels:
        if level.size == 0:
            continue
        a, device = level.anchors, grid.device
        first_cell = grid.boxes[level.start:level.start + a]  # (A, 4)
        parts["wh"].append(first_cell[:, 2:] - first_cell[:, :2])
        for key, value in (("stride", level.stride), ("w", level.width), ("h", level.height),
                           ("start", level.start), ("a", a)):
            parts[key].append(torch.full((a,), value, device=device))
        parts["id"].append(torch.arange(a, device=device))
    if not parts["wh"]:
        empty = torch.zeros(0, dtype=torch.long, device=grid.device)
        return GridAnchors(grid.boxes.new_zeros(0, 2), grid.boxes.new_zeros(0), empty, empty, empty, empty, empty)
    return GridAnchors(
        anchor_wh=torch.cat(parts["wh"]).float(),
        stride=torch.cat(parts["stride"]).float(),
        width=torch.cat(parts["w"]).long(),
        height=torch.cat(parts["h"]).long(),
        start=torch.cat(parts["start"]).long(),
        num_anchors=torch.cat(parts["a"]).long(),
        anchor_id=torch.cat(parts["id"]).long(),
    )


def shape_iou(gt_wh: Tensor, anchor_wh: Tensor) -> Tensor:
    """IoU of boxes aligned at a common centre: ``gt_wh (B, M, 2)`` x ``anchor_wh (K, 2)`` -> ``(B, M, K)``."""
    inter = torch.minimum(gt_wh[:, :, None, :], anchor_wh).prod(-1)  # (B, M, K)
    union = gt_wh.prod(-1)[:, :, None] + anchor_wh.prod(-1) - inter
    return inter / union


class GridAssigner:
    """YOLOv3 / YOLOv4 grid assignment (darknet ``yolo_layer``).

    Steps (all images and GTs at once):

    1. Shape IoU of each GT with every anchor of every level (boxes aligned at a common centre,
       widths and heights only): ``(B, M, K)``, ``K`` = anchors over all levels.
    2. The best-shape anchor (ties: the first, i.e. lower level, then lower anchor) is positive in
       the cell of its level containing the GT centre (``floor(centre / stride)``; a centre off the
       grid uses the nearest edge cell). The GT thereby belongs to the best anchor's level.
    3. YOLOv4 (``extra_match_thr`` not None, darknet ``iou_thresh=0.213``): every other anchor, on any
       level, whose shape IoU is ``> extra_match_thr`` is also positive in the cell of its own level
       that contains the centre.
    4. Two GTs on the same prior: the later GT in the list wins (darknet overwrites in GT order).
    5. Ignore: a non-positive prior whose IoU with any valid GT is ``> ignore_iou_thr`` (0.7 in
       YOLOv4, 0.5 in YOLOv3) is left out of the negative loss. The IoU is the prior box's, or with
       ``ignore_with_pred`` the predicted box's (what darknet does; needs ``pred_boxes``). Over a
       candidate table: the prior boxes only where they can overlap a GT (prior centre within the GT
       widened by the level's largest prior half-size); the predictions against every GT (all pairs).

    ``iou`` of the result is the IoU of the positive prior box with its GT. Needs the priors as a
    :class:`~detkit.anchors.PriorGrid` (a bare tensor raises ValueError: the rule is cell arithmetic).

    Args:
        extra_match_thr: YOLOv4's extra-anchor shape-IoU threshold; None = YOLOv3 (best anchor only).
        ignore_iou_thr: IoU above which a non-positive prior is ignored; None disables ignoring.
        ignore_with_pred: measure the ignore IoU with ``pred_boxes`` instead of the prior boxes.
    """

    uses_predictions: bool = False  # box-only: the loss pipeline need not compute pred_scores

    def __init__(self, extra_match_thr: float | None = 0.213, ignore_iou_thr: float | None = 0.7,
                 ignore_with_pred: bool = False) -> None:
        for name, value in (("extra_match_thr", extra_match_thr), ("ignore_iou_thr", ignore_iou_thr)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1] or None (disabled), got {value}")
        self.extra_match_thr = extra_match_thr
        self.ignore_iou_thr = ignore_iou_thr
        self.ignore_with_pred = bool(ignore_with_pred)

    def __repr__(self) -> str:
        return (f"GridAssigner(extra_match_thr={self.extra_match_thr}, ignore_iou_thr={self.ignore_iou_thr}, "
                f"ignore_with_pred={self.ignore_with_pred})")

    @limit_assign_threads
    def assign(self, priors: PriorGrid | Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor, *,
               num_level_priors: Sequence[int] | None = None, prior_strides: Tensor | None = None,
               pred_boxes: Tensor | None = None, pred_scores: Tensor | None = None) -> AssignResult:
        """Assign (see :class:`~detkit.assigners.base.Assigner`); ``pred_boxes`` only with ``ignore_with_pred``."""
        p, gt = prepare(priors, gt_boxes, gt_labels, gt_mask, num_level_priors=num_level_priors,
                        prior_strides=prior_strides)
        anchors = grid_anchors(p, "GridAssigner")
        b, n = gt.batch_size, p.num_priors
        gt_index = self._positives(anchors, gt.boxes, gt.valid, n)
        iou = aligned_iou(p.boxes, assigned_boxes(gt, gt_index))  # (N, 4) with (B, N, 4) -> (B, N)
        if self.ignore_iou_thr is None:
            return make_result(gt_index, iou, gt)
        if self.ignore_with_pred and (pred_boxes is None or tuple(pred_boxes.shape) != (b, n, 4)):
            raise ValueError(f"ignore_with_pred=True needs pred_boxes of shape (B, N, 4) = ({b}, {n}, 4)")
        best = self._best_iou(p, gt, pred_boxes if self.ignore_with_pred else None)
        return make_result(gt_index, iou, gt, ignore_mask=best > self.ignore_iou_thr)

    def _positives(self, anchors: GridAnchors, boxes: Tensor, valid: Tensor, num_priors: int) -> Tensor:
        """Steps 1-4: ``Tensor[B, N]`` long GT index (-1 where not positive)."""
        b, m = valid.shape
        out = torch.full((b, num_priors), -1, dtype=torch.long, device=boxes.device)
        if m == 0 or anchors.anchor_wh.shape[0] == 0:
            return out
        wh = boxes[..., 2:] - boxes[..., :2]  # (B, M, 2)
        sim = shape_iou(wh, anchors.anchor_wh)  # (B, M, K)
        best = sim.argmax(dim=-1)  # (B, M), first maximum on ties
        chosen = torch.nn.functional.one_hot(best, sim.shape[-1]).bool()  # (B, M, K)
        if self.extra_match_thr is not None:
            chosen |= sim > self.extra_match_thr
        chosen &= valid[:, :, None]
        prior = anchors.prior_index((boxes[..., :2] + boxes[..., 2:]) / 2)  # (B, M, K)
        gt_ids = torch.arange(m, device=boxes.device).view(1, m, 1).expand_as(prior)  # (M,) -> (B, M, K)
        claims = torch.where(chosen, gt_ids, torch.full_like(gt_ids, -1))
        # (B, M, K) -> (B, M*K); the largest claiming GT index is the last one written.
        return out.scatter_reduce(1, prior.reshape(b, -1), claims.reshape(b, -1), "amax")

    def _best_iou(self, p: Priors, gt: GTBatch, pred_boxes: Tensor | None) -> Tensor:
        """Step 5: ``Tensor[B, N]`` max IoU of each prior's box (or prediction, ``pred_boxes (B, N, 4)``) with
        any valid GT, 0 without one, over the candidate table (windows where prior boxes can overlap a GT;
        all pairs for predictions)."""
        b, n = gt.batch_size, p.num_priors
        best = p.boxes.new_zeros(b * n)
        image, slot = gt_rows(gt.valid)  # (G,) each
        boxes = gt.boxes[image, slot]  # (G, 4)
        regions = None if pred_boxes is not None or p.grid is None else overlap_regions(p.grid, boxes)
        queries = p.boxes if pred_boxes is None else pred_boxes.float().flatten(0, 1)  # (N, 4) or (B*N, 4)
        for table in candidate_tables(p, gt, regions, rows=(image, slot)):
            query = table.prior if pred_boxes is None else table.pred_index
            pair_boxes = gt.boxes[table.image, table.slot].index_select(0, table.row)  # (Gc, 4) -> (P, 4)
            iou = aligned_iou(pair_boxes, queries.index_select(0, query))  # (P,)
            best = best.scatter_reduce(0, table.pred_index, iou, "amax")
        return best.view(b, n)
