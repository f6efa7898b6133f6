"""Dynamic-k matching shared by SimOTA (YOLOX) and dynamic soft labels (RTMDet): each GT takes its
``k`` lowest-cost priors, ``k`` from the sum of its best IoUs, and a prior taken by several GTs
goes to the GT of lowest cost. Chunk-safe: GT chunks are taken one by one and merged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detkit.assigners.base import empty_state
from detkit.assigners.chunking import merge_best

__all__ = ["DynamicKMatches", "dynamic_ks", "take_lowest_cost"]


def dynamic_ks(iou: Tensor, candidate_topk: int) -> Tensor:
    """``Tensor[B, Mc]`` int: ``max(1, int(sum of each GT's candidate_topk largest IoUs))``.

    Args:
        iou: ``Tensor[B, Mc, N]``; pairs that must not count hold 0.
    """
    k = min(candidate_topk, iou.shape[-1])
    return iou.topk(k, dim=-1).values.sum(-1).int().clamp(min=1)


def take_lowest_cost(cost: Tensor, counts: Tensor, max_k: int, tie_order: str = "index") -> Tensor:
    """Each GT's ``counts`` lowest-cost priors; pairs of infinite cost are never taken.

    Args:
        cost: ``Tensor[B, Mc, N]``.
        counts: ``Tensor[B, Mc]`` int, how many each GT takes (at most ``max_k``).
        max_k: the largest count possible.
        tie_order: ``"index"``: equal costs in prior-index order (never depends on ``torch.topk``'s
            tie order); ``"torch_sort"``: the order of ``torch.sort`` (not stable), as mmyolo's
            batched assigner takes them.

    Returns:
        ``Tensor[B, Mc, N]`` bool, the priors each GT takes.
    """
    k = min(max_k, cost.shape[-1])
    if tie_order == "torch_sort":
        order = cost.sort(dim=-1).indices[..., :k]  # (B, Mc, k)
        low = cost.gather(-1, order)
    else:
        # The k lowest costs, as a set that never depends on topk's tie order ...
        low, order = cost.topk(k, dim=-1, largest=False)  # (B, Mc, k)
        kth = low.amax(dim=-1, keepdim=True)  # (B, Mc, 1); inf when fewer than k candidates (never taken)
        tied = ((cost <= kth).sum(-1) > k) & torch.isfinite(kth[..., 0])  # (B, Mc)
        if bool(tied.any()):
            order[tied] = cost[tied].sort(dim=-1, stable=True).indices[:, :k]
        # ... then ordered by (cost, prior index).
        order = order.sort(dim=-1).values
        low, perm = cost.gather(-1, order).sort(dim=-1, stable=True)
        order = order.gather(-1, perm)
    rank = torch.arange(k, device=cost.device)
    keep = (rank < counts[..., None]) & torch.isfinite(low)  # (B, Mc, k)
    taken = torch.zeros_like(cost, dtype=torch.bool)
    return taken.scatter_(-1, order, keep)


class DynamicKMatches:
    """Running result of dynamic-k matching over GT chunks.

    For each prior: how many GTs took it, the last GT that took it, and the GT of lowest cost
    among *all* GTs (taken or not; ties: lowest GT index), which settles a prior taken by several
    GTs (YOLOX's and RTMDet's ``cost.min`` over the GTs).
    """

    def __init__(self, batch: int, num_priors: int, device: torch.device) -> None:
        self.matches = torch.zeros(batch, num_priors, dtype=torch.long, device=device)
        self.any_gt = torch.full((batch, num_priors), -1, dtype=torch.long, device=device)
        self.min_cost, self.min_gt = empty_state(batch, num_priors, device, float("inf"))

    def add(self, taken: Tensor, cost: Tensor, start: int) -> None:
        """Merge one chunk: ``taken`` and ``cost`` ``Tensor[B, Mc, N]`` of GTs ``start .. start+Mc``."""
        self.matches += taken.sum(dim=1)
        ids = torch.arange(start, start + taken.shape[1], device=taken.device).view(1, -1, 1)  # (Mc,) -> (1, Mc, 1)
        self.any_gt = torch.maximum(self.any_gt, torch.where(taken, ids, torch.full_like(ids, -1)).amax(dim=1))
        c_cost, c_gt = cost.min(dim=1)  # (B, N), first minimum on ties
        self.min_cost, self.min_gt = merge_best(self.min_cost, self.min_gt, c_cost, c_gt + start, lower_is_better=True)

    def gt_index(self) -> Tensor:
        """``Tensor[B, N]`` long: the matched GT of each prior, -1 where no GT took it."""
        gt_index = torch.where(self.matches > 1, self.min_gt, self.any_gt)
        return torch.where(self.matches > 0, gt_index, torch.full_like(gt_index, -1))
