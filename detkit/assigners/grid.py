"""Grid assignment of YOLOv3 / YOLOv4 (darknet's ``yolo_layer``), batched over images and GTs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
from detkit.assigners.chunking import check_chunk, gt_chunks
from detkit.boxes import aligned_iou, pairwise_iou

__all__ = ["GridAssigner", "GridLayout", "grid_layout"]


@dataclass
class GridLayout:
    """Where each anchor of a prior grid lives; ``K`` anchors over all levels.

    Attributes:
        anchor_wh: ``Tensor[K, 2]`` anchor widths and heights, level by level.
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


def grid_layout(priors: Tensor, prior_strides: Tensor, num_level_priors: Sequence[int]) -> GridLayout:
    """Read the anchor grid from priors laid out as ``anchors.grid_priors`` makes them.

    Each level must be ``H x W`` cells (row-major: y, then x) of ``A`` anchors centred on the cell
    centre ``((x + 0.5) * stride, (y + 0.5) * stride)``, anchor innermost.

    Raises:
        ValueError: when the priors are not laid out this way.
    """
    centres = (priors[:, :2] + priors[:, 2:]) / 2  # (N, 2)
    parts: dict[str, list[Tensor]] = {k: [] for k in ("wh", "stride", "w", "h", "start", "a", "id")}
    start = 0
    for level, n_l in enumerate(num_level_priors):
        if n_l == 0:
            continue
        stride = prior_strides[start]
        c = centres[start:start + n_l]  # (n_l, 2)
        cells = torch.floor(c / stride).long()  # (n_l, 2)
        a = int((cells == cells[0]).all(-1).long().cumprod(0).sum())  # leading priors of the first cell
        w, h = int(cells[:, 0].max()) + 1, int(cells[:, 1].max()) + 1
        expect = torch.arange(n_l, device=priors.device) // a  # cell number of each prior
        if (w * h * a != n_l or not bool((prior_strides[start:start + n_l] == stride).all())
                or not bool((cells[:, 0] == expect % w).all() and (cells[:, 1] == expect // w).all())):
            raise ValueError(
                f"GridAssigner: level {level} priors are not an H x W x A grid (row-major y, x, anchor "
                f"innermost, one stride) as anchors.grid_priors lays them out")
        wh = priors[start:start + a, 2:] - priors[start:start + a, :2]  # (A, 2)
        parts["wh"].append(wh)
        for key, value in (("stride", float(stride)), ("w", w), ("h", h), ("start", start), ("a", a)):
            parts[key].append(torch.full((a,), value, device=priors.device))
        parts["id"].append(torch.arange(a, device=priors.device))
        start += n_l
    return GridLayout(
        anchor_wh=torch.cat(parts["wh"]),
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


class GridAssigner(TwoFormAssigner):
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
       ``ignore_with_pred`` the predicted box's (what darknet does; needs ``pred_boxes``). The
       candidate-sparse form (``assign`` on grid priors) measures the prior boxes only where they can
       overlap a GT (prior centre within the GT widened by the level's largest prior half-size).

    ``iou`` of the result is the IoU of the positive prior box with its GT. Needs ``prior_strides``
    and ``num_level_priors``, and priors laid out as ``anchors.grid_priors`` makes them.

    Args:
        extra_match_thr: YOLOv4's extra-anchor shape-IoU threshold; None = YOLOv3 (best anchor only).
        ignore_iou_thr: IoU above which a non-positive prior is ignored; None disables ignoring.
        ignore_with_pred: measure the ignore IoU with ``pred_boxes`` instead of the prior boxes.
        max_gt_chunk: process at most this many GTs at a time in the ignore step (same result);
            "auto" (default) picks it from the free memory of a CUDA device (chunking.auto_chunk).
    """

    uses_predictions: bool = False  # box-only: the loss pipeline need not compute pred_scores

    def __init__(self, extra_match_thr: float | None = 0.213, ignore_iou_thr: float | None = 0.7,
                 ignore_with_pred: bool = False, max_gt_chunk: int | str | None = "auto") -> None:
        for name, value in (("extra_match_thr", extra_match_thr), ("ignore_iou_thr", ignore_iou_thr)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1] or None (disabled), got {value}")
        self.extra_match_thr = extra_match_thr
        self.ignore_iou_thr = ignore_iou_thr
        self.ignore_with_pred = bool(ignore_with_pred)
        self.max_gt_chunk = check_chunk(max_gt_chunk)

    def __repr__(self) -> str:
        return (f"GridAssigner(extra_match_thr={self.extra_match_thr}, ignore_iou_thr={self.ignore_iou_thr}, "
                f"ignore_with_pred={self.ignore_with_pred})")

    def _assign(self, priors: Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor, *,
                num_level_priors: Sequence[int] | None, prior_strides: Tensor | None, pred_boxes: Tensor | None,
                pred_scores: Tensor | None, dense: bool) -> AssignResult:
        priors, gt = prepare_inputs(priors, gt_boxes, gt_labels, gt_mask)
        b, n, m = gt.batch_size, priors.shape[0], gt.num_gts
        counts = check_level_counts(num_level_priors, n, "GridAssigner")
        strides = check_strides(prior_strides, n, "GridAssigner")
        gt_index = torch.full((b, n), -1, dtype=torch.long, device=priors.device)
        if m and n:
            layout = grid_layout(priors, strides, counts)
            gt_index = self._positives(layout, gt.boxes, gt.valid, n)
        iou = aligned_iou(priors, assigned_boxes(gt, gt_index))  # (N, 4) with (B, N, 4) -> (B, N)
        if self.ignore_iou_thr is None:
            return make_result(gt_index, iou, gt)
        if self.ignore_with_pred:
            if pred_boxes is None or tuple(pred_boxes.shape) != (b, n, 4):
                raise ValueError(f"ignore_with_pred=True needs pred_boxes of shape (B, N, 4) = ({b}, {n}, 4)")
            best = self._dense_best_iou(pred_boxes.float(), gt)
        else:
            grids = None if dense else prior_layout(priors, counts, strides)
            best = self._dense_best_iou(priors, gt) if grids is None else self._sparse_best_iou(priors, gt, grids)
        return make_result(gt_index, iou, gt, ignore_mask=best > self.ignore_iou_thr)

    def _positives(self, layout: GridLayout, boxes: Tensor, valid: Tensor, num_priors: int) -> Tensor:
        """Steps 1-4: ``Tensor[B, N]`` long GT index (-1 where not positive)."""
        b, m = valid.shape
        wh = boxes[..., 2:] - boxes[..., :2]  # (B, M, 2)
        sim = shape_iou(wh, layout.anchor_wh)  # (B, M, K)
        best = sim.argmax(dim=-1)  # (B, M), first maximum on ties
        chosen = torch.nn.functional.one_hot(best, sim.shape[-1]).bool()  # (B, M, K)
        if self.extra_match_thr is not None:
            chosen |= sim > self.extra_match_thr
        chosen &= valid[:, :, None]
        prior = layout.prior_index((boxes[..., :2] + boxes[..., 2:]) / 2)  # (B, M, K)
        gt_ids = torch.arange(m, device=boxes.device).view(1, m, 1).expand_as(prior)  # (M,) -> (B, M, K)
        claims = torch.where(chosen, gt_ids, torch.full_like(gt_ids, -1))
        out = torch.full((b, num_priors), -1, dtype=torch.long, device=boxes.device)
        # (B, M, K) -> (B, M*K); the largest claiming GT index is the last one written.
        return out.scatter_reduce(1, prior.reshape(b, -1), claims.reshape(b, -1), "amax")

    def _dense_best_iou(self, queries: Tensor, gt: GTBatch) -> Tensor:
        """Step 5: ``Tensor[B, N]`` max IoU of each query box (prior ``(N, 4)`` or prediction
        ``(B, N, 4)``) with any valid GT, 0 without one."""
        best, _ = empty_state(gt.batch_size, queries.shape[-2], queries.device, 0.0)
        for chunk in gt_chunks(gt.num_gts, self.max_gt_chunk, batch=gt.batch_size, num_priors=queries.shape[-2],
                               device=queries.device):
            iou = pairwise_iou(gt.boxes[:, chunk], queries)  # (B, Mc, N)
            iou = iou.masked_fill_(~gt.valid[:, chunk, None], 0.0)
            best = torch.maximum(best, iou.amax(dim=1))
        return best

    def _sparse_best_iou(self, priors: Tensor, gt: GTBatch, layout: PriorLayout) -> Tensor:
        """Step 5 over the pairs whose boxes can overlap (all others have IoU 0)."""
        b, n = gt.batch_size, priors.shape[0]
        best = priors.new_zeros(b * n)
        reach = [max(level.extent) for level in layout.levels]
        for chunk in gt_chunks(gt.num_gts, self.max_gt_chunk, batch=b, num_priors=n, device=priors.device):
            image, slot = valid_rows(gt.valid, chunk)  # (G,) each
            boxes = gt.boxes[image, slot]  # (G, 4)
            row, prior = window_pairs(layout, level_regions(layout, boxes, reach))  # (P,) each
            iou = aligned_iou(boxes[row], priors[prior])  # (P,)
            best = best.scatter_reduce(0, image[row] * n + prior, iou, "amax")
        return best.view(b, n)
