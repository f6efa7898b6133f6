"""``min_pos_per_gt`` for any rule: a wrapper that gives each valid GT left short of positives its best
free priors.

Every rule leaves a few GTs without a positive (ATSS's threshold or centre test rejects all of a tiny
GT's candidates; max-IoU's low-quality match or the grid's "later GT wins" lose a shared prior), and
such a GT never trains the detector. :class:`MinPositives` wraps any assigner and tops those GTs up:

    L(MinPositives)(assigner=L(ATSSAssigner)(topk=9), min_pos_per_gt=1)
    --cfg-options 'model.head.loss.assigner=MinPositives(assigner=ATSSAssigner(), min_pos_per_gt=1)'
    tools/compare_assigners.py CONFIG --assigners atss atss+minpos     # presets: "<name>+minpos[K]"

The forced priors are marked in :attr:`MinPosAssignResult.forced_mask`; the loss pipeline counts
them as ``stat_forced_pos``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from detkit.analysis import positives_per_gt
from detkit.anchors import PriorGrid
from detkit.assigners.base import Assigner, AssignResult, prepare
from detkit.assigners.threads import limit_assign_threads
from detkit.boxes import aligned_iou, pairwise_iou

__all__ = ["MinPosAssignResult", "MinPositives"]

INSIDE_BONUS = 2.0  # priority of a prior whose centre lies inside the GT: 2 + IoU, above any outside one
NO_PRIOR = float("-inf")  # priority of a prior that cannot be taken (positive already, or GT done)


@dataclass
class MinPosAssignResult(AssignResult):
    """An :class:`AssignResult` with ``forced_mask (B, N)`` bool: the positives :class:`MinPositives`
    added (the wrapped rule's own positives are False)."""

    forced_mask: Tensor | None = None

    def to(self, device: torch.device | str) -> MinPosAssignResult:
        """A copy with every tensor on ``device``."""
        moved: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        moved = {k: v if v is None else v.to(device) for k, v in moved.items()}
        return MinPosAssignResult(**moved)


class MinPositives:
    """Wraps an assigner so that every valid GT gets at least ``min_pos_per_gt`` positive priors.

    Steps (all images and GTs at once; the rounds are a loop over claims, not over images or GTs):

    1. Run the wrapped assigner; count each valid GT's positives. A GT with fewer than
       ``min_pos_per_gt`` needs the difference; only those GTs (``K`` of them) are looked at further.
    2. Rank every prior for each needy GT: priors whose centre lies inside the GT (every side margin
       ``> center_margin`` px, as ATSS) first, by IoU of the prior box with the GT (highest first);
       then the others, by distance from the prior's centre to the GT's centre (nearest first).
       A prior that is already positive (for any GT) is never taken: positives are not stolen.
    3. Rounds: each GT still short claims its best free prior (ties: lowest prior index). When several
       GTs of an image claim the same prior, the highest priority wins (ties: lowest GT index); the
       losers claim their next best in the next round. Rounds end when no GT is short or no free
       prior is left; each round grants at least one claim, so they always end.
    4. A forced positive's ``gt_index``/``labels`` are its GT's; ``ignore_mask`` is cleared there.
       ``iou`` follows the wrapped rule's convention: the prior box's IoU for box-only rules, the
       predicted box's for prediction-aware ones (when ``pred_boxes`` are given). Where the rule
       sets ``score_target`` (TAL, SimOTA, DSL) a forced positive gets that IoU as its target (what
       TAL's normalisation gives a GT with a single positive, and SimOTA's / DSL's soft label);
       ``align_metric`` stays 0 there.

    An image with no valid GT, or a GT whose every prior is taken, gets nothing forced. The result
    is a :class:`MinPosAssignResult` whose ``forced_mask`` marks the added positives.

    Args:
        assigner: any assigner (``assign(...) -> AssignResult``).
        min_pos_per_gt: least positives per valid GT (>= 1).
        center_margin: least distance (px) from a prior's centre to every GT side to count as inside.
    """

    def __init__(self, assigner: Assigner, min_pos_per_gt: int = 1, center_margin: float = 0.01) -> None:
        if not isinstance(assigner, Assigner):
            raise ValueError(f"MinPositives needs an assigner (an object with assign()), got {assigner!r}")
        if not isinstance(min_pos_per_gt, int) or isinstance(min_pos_per_gt, bool) or min_pos_per_gt < 1:
            raise ValueError(f"min_pos_per_gt must be an int >= 1, got {min_pos_per_gt!r}")
        self.assigner = assigner
        self.min_pos_per_gt = min_pos_per_gt
        self.center_margin = float(center_margin)

    @property
    def uses_predictions(self) -> bool:
        """The wrapped rule's (the loss pipeline computes ``pred_scores`` only when it is True)."""
        return bool(getattr(self.assigner, "uses_predictions", True))

    def __repr__(self) -> str:
        return f"MinPositives({self.assigner!r}, min_pos_per_gt={self.min_pos_per_gt})"

    @limit_assign_threads
    def assign(self, priors: PriorGrid | Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor, *,
               num_level_priors: Sequence[int] | None = None, prior_strides: Tensor | None = None,
               pred_boxes: Tensor | None = None, pred_scores: Tensor | None = None) -> MinPosAssignResult:
        """Assign with the wrapped rule, then top up the GTs left short (see the class docstring); the
        arguments are those of :meth:`detkit.assigners.Assigner.assign`."""
        result = self.assigner.assign(priors, gt_boxes, gt_labels, gt_mask, num_level_priors=num_level_priors,
                                      prior_strides=prior_strides, pred_boxes=pred_boxes, pred_scores=pred_scores)
        prepared, gt = prepare(priors, gt_boxes, gt_labels, gt_mask, num_level_priors=num_level_priors,
                               prior_strides=prior_strides)
        prior_boxes = prepared.boxes  # (N, 4)
        values = {f.name: getattr(result, f.name) for f in fields(AssignResult)}
        forced = torch.zeros_like(result.pos_mask)
        if gt.num_gts == 0:
            return MinPosAssignResult(**values, forced_mask=forced)
        counts = positives_per_gt(result.gt_index, result.pos_mask, gt.num_gts)  # (B, M)
        need = (self.min_pos_per_gt - counts).clamp(min=0) * gt.valid  # (B, M)
        img, gt_row = need.nonzero(as_tuple=True)  # (K,), (K,): the needy GTs
        if img.numel() == 0:
            return MinPosAssignResult(**values, forced_mask=forced)
        boxes = gt.boxes[img, gt_row]  # (K, 4)
        priority = self._priority(prior_boxes, boxes)  # (K, N)
        prior_idx = self._claim(priority, img, need[img, gt_row], result.pos_mask)  # (K, R), -1 unused
        taken_k, taken_r = (prior_idx >= 0).nonzero(as_tuple=True)
        b, p, m = img[taken_k], prior_idx[taken_k, taken_r], gt_row[taken_k]  # (F,) each forced pair
        forced[b, p] = True
        values["gt_index"] = values["gt_index"].index_put((b, p), m)
        values["pos_mask"] = values["pos_mask"] | forced
        values["ignore_mask"] = values["ignore_mask"] & ~forced
        values["labels"] = values["labels"].index_put((b, p), gt.labels[b, m])
        use_pred = pred_boxes is not None and self.uses_predictions
        src = pred_boxes.float()[b, p] if pred_boxes is not None and use_pred else prior_boxes[p]  # (F, 4)
        iou = aligned_iou(src, gt.boxes[b, m]).to(values["iou"].dtype)  # (F,)
        values["iou"] = values["iou"].index_put((b, p), iou)
        if values["score_target"] is not None:
            values["score_target"] = values["score_target"].index_put((b, p), iou.to(values["score_target"].dtype))
        if values["align_metric"] is not None:
            values["align_metric"] = values["align_metric"].index_put((b, p), values["align_metric"].new_zeros(()))
        return MinPosAssignResult(**values, forced_mask=forced)

    def _priority(self, priors: Tensor, boxes: Tensor) -> Tensor:
        """Step 2: ``Tensor[K, N]`` priority of each prior for each needy GT ``boxes (K, 4)``:
        ``INSIDE_BONUS + IoU`` (in [2, 3]) for priors whose centre is inside, else minus the centre
        distance (<= 0)."""
        centres = (priors[:, :2] + priors[:, 2:]) / 2  # (N, 2)
        margins = torch.cat([centres[None] - boxes[:, None, :2], boxes[:, None, 2:] - centres[None]], -1)  # (K, N, 4)
        inside = margins.amin(dim=-1) > self.center_margin  # (K, N)
        iou = pairwise_iou(boxes[None], priors)[0]  # (1, K, 4) with (N, 4) -> (K, N)
        gt_centres = (boxes[:, :2] + boxes[:, 2:]) / 2  # (K, 2)
        dist = (centres[None] - gt_centres[:, None]).pow(2).sum(-1).sqrt()  # (K, N)
        return torch.where(inside, iou + INSIDE_BONUS, -dist)

    @staticmethod
    def _claim(priority: Tensor, img: Tensor, need: Tensor, taken: Tensor) -> Tensor:
        """Step 3: ``Tensor[K, R]`` the prior each needy GT got in each round (-1: none), for GTs in
        images ``img (K,)`` needing ``need (K,)`` more, with ``taken (B, N)`` the rule's positives."""
        k, n = priority.shape
        rows = torch.arange(k, device=priority.device)
        taken = taken.clone()
        need = need.clone()
        got: list[Tensor] = []
        while True:
            free = priority.masked_fill(taken[img] | (need <= 0)[:, None], NO_PRIOR)  # (K, N)
            best_val, best = free.max(dim=1)  # (K,); ties: the first (lowest prior index)
            claim = best_val > NO_PRIOR
            if not claim.any():
                break
            slot = img * n + best  # (K,) flat (image, prior) of each claim
            top = torch.full((taken.numel(),), NO_PRIOR, device=priority.device)
            top = top.scatter_reduce(0, slot[claim], best_val[claim], "amax")  # best priority per slot
            contender = claim & (best_val == top[slot])
            first = torch.full((taken.numel(),), k, device=priority.device, dtype=torch.long)
            first = first.scatter_reduce(0, slot[contender], rows[contender], "amin")  # lowest GT row wins ties
            win = contender & (first[slot] == rows)
            taken.view(-1)[slot[win]] = True
            need = need - win.long()
            got.append(torch.where(win, best, torch.full_like(best, -1)))
        return torch.stack(got, dim=1) if got else torch.full((k, 0), -1, dtype=torch.long, device=priority.device)

