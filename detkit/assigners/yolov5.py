"""YOLOv5's shape-ratio assignment with neighbouring cells (Ultralytics YOLOv5 ``build_targets``), batched."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from detkit.anchors import PriorGrid
from detkit.assigners.base import AssignResult, assigned_boxes, make_result, prepare
from detkit.assigners.grid import GridAnchors, grid_anchors
from detkit.assigners.threads import limit_assign_threads
from detkit.boxes import aligned_iou

__all__ = ["YOLOv5Assigner"]

# The cells a GT may claim, in YOLOv5's order: its own cell, then the neighbour on the left, above,
# on the right, below. A claim of a later direction wins a shared prior (see step 4).
DIRECTIONS = ("centre", "left", "up", "right", "down")


class YOLOv5Assigner:
    """YOLOv5: every anchor whose shape is close enough to the GT's, in the GT's cell and its two
    nearest neighbouring cells.

    Steps (all images, GTs and levels at once; a table of at most ``M x K x 5`` claims per image, ``K`` the
    anchors over all levels, so no chunking):

    1. Shape test per GT and anchor (every level): ``r = GT (w, h) / anchor (w, h)``; the anchor
       matches when ``max(r, 1 / r) < anchor_t`` on both sides. A GT may thus match several
       anchors on several levels, or none.
    2. Cells, in grid units ``g = centre / stride`` of the anchor's level: the centre cell
       ``floor(g)`` (clamped to the grid); the left neighbour when ``frac(g_x) < offset`` and
       ``g_x > 1``, the upper one when the same holds for y; the right neighbour when
       ``frac(W - g_x) < offset`` and ``W - g_x > 1`` (``W`` the grid width), the lower one
       likewise with ``H``. With ``offset=0.5`` these are the two cells nearest the centre (a
       centre exactly on a cell's middle line claims no neighbour on that axis).
    3. Each matching anchor is positive in each of those cells.
    4. One label per prior: a prior claimed by several GTs goes to the claim YOLOv5 lists last,
       i.e. the largest ``(direction, GT index)`` with directions ordered centre < left < up <
       right < down (a GT whose *left* neighbour the prior is has direction "left"). YOLOv5 itself
       trains box and class losses on every claim and writes the objectness target in this
       order, so the last claim's GT is the one its objectness target ends with on the CPU; the
       other claims of a shared prior are the difference to YOLOv5 (measured in
       ``benchmarks/parity_assigners.py``).

    ``iou`` of the result is the IoU of the prior box with its GT. YOLOv5 ignores nothing:
    ``ignore_mask`` is all False. Needs the priors as a :class:`~detkit.anchors.PriorGrid` (what
    ``anchors.grid_priors`` makes; a bare tensor raises ValueError: the rule is cell arithmetic).

    Args:
        anchor_t: largest allowed width or height ratio between a GT and an anchor (YOLOv5: 4.0).
        offset: how near (in cells) a cell border the centre must be for the neighbour across
            it to be claimed (YOLOv5: 0.5; 0 keeps the centre cell alone).
    """

    uses_predictions: bool = False  # box-only: the loss pipeline need not compute pred_scores

    def __init__(self, anchor_t: float = 4.0, offset: float = 0.5) -> None:
        if not anchor_t > 1.0:
            raise ValueError(f"anchor_t must be > 1 (a ratio of sizes), got {anchor_t!r}")
        if not 0.0 <= offset <= 0.5:
            raise ValueError(f"offset must be in [0, 0.5] cells, got {offset!r}")
        self.anchor_t = float(anchor_t)
        self.offset = float(offset)

    def __repr__(self) -> str:
        return f"YOLOv5Assigner(anchor_t={self.anchor_t}, offset={self.offset})"

    @limit_assign_threads
    def assign(self, priors: PriorGrid | Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor, *,
               num_level_priors: Sequence[int] | None = None, prior_strides: Tensor | None = None,
               pred_boxes: Tensor | None = None, pred_scores: Tensor | None = None) -> AssignResult:
        """Assign (see :class:`~detkit.assigners.base.Assigner`); ``pred_*`` are not used."""
        p, gt = prepare(priors, gt_boxes, gt_labels, gt_mask, num_level_priors=num_level_priors,
                        prior_strides=prior_strides)
        anchors = grid_anchors(p, "YOLOv5Assigner")
        b, n, m = gt.batch_size, p.num_priors, gt.num_gts
        claim = torch.full((b, n), -1, dtype=torch.long, device=p.device)
        if m and anchors.anchor_wh.shape[0]:
            prior, key = self._claims(anchors, gt.boxes, gt.valid)
            claim = claim.scatter_reduce(1, prior, key, "amax")  # step 4: the largest key wins
        gt_index = torch.where(claim >= 0, claim % max(m, 1), torch.full_like(claim, -1))
        iou = aligned_iou(p.boxes, assigned_boxes(gt, gt_index))  # (N, 4) with (B, N, 4) -> (B, N)
        return make_result(gt_index, iou, gt)

    def _claims(self, layout: GridAnchors, boxes: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """Steps 1-3 for GTs ``boxes (B, M, 4)``: the prior of each claim and its key
        ``direction * M + GT index`` (-1 where no claim), both ``Tensor[B, M*K*5]`` long."""
        b, m = valid.shape
        wh = boxes[..., 2:] - boxes[..., :2]  # (B, M, 2)
        ratio = wh[:, :, None, :] / layout.anchor_wh  # (B, M, K, 2)
        match = torch.maximum(ratio, 1 / ratio).amax(-1) < self.anchor_t  # (B, M, K)
        match &= valid[:, :, None]
        g = ((boxes[..., :2] + boxes[..., 2:]) / 2)[:, :, None, :] / layout.stride[:, None]  # (B, M, K, 2)
        size = torch.stack([layout.width, layout.height], -1).float()  # (K, 2)
        inverse = size - g  # distance to the far border, in cells
        near_low = (g % 1 < self.offset) & (g > 1)  # (B, M, K, 2): left (x), up (y)
        near_high = (inverse % 1 < self.offset) & (inverse > 1)  # right (x), down (y)
        shift = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]], device=g.device)
        shift = shift * self.offset  # (5, 2) cell offsets subtracted from g, in DIRECTIONS order
        ok = torch.stack([torch.ones_like(match), near_low[..., 0], near_low[..., 1],
                          near_high[..., 0], near_high[..., 1]], -1) & match[..., None]  # (B, M, K, 5)
        cell = torch.floor(g[..., None, :] - shift).long()  # (B, M, K, 5, 2)
        gx = torch.minimum(cell[..., 0].clamp(min=0), layout.width[:, None] - 1)  # (B, M, K, 5)
        gy = torch.minimum(cell[..., 1].clamp(min=0), layout.height[:, None] - 1)
        prior = layout.start[:, None] + (gy * layout.width[:, None] + gx) * layout.num_anchors[:, None] \
            + layout.anchor_id[:, None]  # (B, M, K, 5)
        gt_ids = torch.arange(m, device=g.device).view(1, m, 1, 1)  # (M,) -> (1, M, 1, 1)
        direction = torch.arange(len(DIRECTIONS), device=g.device)  # (5,)
        key = torch.where(ok, direction * m + gt_ids, torch.full_like(prior, -1))  # (B, M, K, 5)
        return prior.reshape(b, -1), key.reshape(b, -1)  # (B, M, K, 5) -> (B, M*K*5)
