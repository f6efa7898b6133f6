"""A rule of your own, checked by detkit's conformance kit: the README's "A rule of your own" block, verbatim
(tests/test_conformance.py holds the two equal and runs both).

    python examples/custom_assigner.py    # prints the check_assigner report
"""

from __future__ import annotations

import torch
from torch import Tensor

from detkit.anchors import PriorGrid
from detkit.assigners.base import AssignResult, make_result, prepare
from detkit.boxes import pairwise_iou
from detkit.testing import check_assigner


class NearestInsideAssigner:
    """Each GT takes the ``k`` priors nearest its centre among those whose centre lies inside it (ties at
    the k-th distance all taken); a prior claimed twice goes to the nearer GT (ties: the lower index)."""

    uses_predictions = False  # box-only: the loss pipeline need not build pred_scores

    def __init__(self, k: int = 3) -> None:
        self.k = k

    def assign(self, priors: PriorGrid | Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor,
               **unused: object) -> AssignResult:
        """``priors`` (N), ``gt_boxes (B, M, 4)``, ``gt_labels`` and ``gt_mask (B, M)`` -> ``(B, N)`` fields."""
        p, gt = prepare(priors, gt_boxes, gt_labels, gt_mask)  # fp32 boxes; gt.valid: rows that take part
        box = gt.boxes[:, :, None]  # (B, M, 1, 4)
        inside = ((p.centres > box[..., :2]) & (p.centres < box[..., 2:])).all(-1) & gt.valid[..., None]
        dist = ((p.centres - (box[..., :2] + box[..., 2:]) / 2) ** 2).sum(-1)  # (B, M, N) squared
        dist = dist.masked_fill(~inside, torch.inf)
        k = min(self.k, p.num_priors)
        if gt.num_gts == 0 or k == 0:  # nothing to reduce over: every prior negative
            return make_result(dist.new_full(dist.shape[::2], -1).long(), dist.new_zeros(dist.shape[::2]), gt)
        kth = dist.topk(k, dim=-1, largest=False).values[..., -1:]  # (B, M, 1) each GT's k-th distance
        best, gt_index = dist.masked_fill(dist > kth, torch.inf).min(dim=1)  # (B, N) nearest claiming GT
        gt_index = gt_index.masked_fill(best.isinf(), -1)
        iou = pairwise_iou(gt.boxes, p.boxes)  # (B, M, N)
        return make_result(gt_index, iou.gather(1, gt_index.clamp(min=0)[:, None]).squeeze(1), gt)


if __name__ == "__main__":
    print(check_assigner(NearestInsideAssigner(k=3)))  # "...: conforms", then each check passed
