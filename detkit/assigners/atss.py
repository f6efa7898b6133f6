"""ATSS: adaptive training sample selection (Zhang et al., CVPR 2020), batched, without the full
``N x M`` IoU matrix."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from detkit.assigners.base import AssignResult, check_level_counts, empty_state, make_result, prepare_inputs
from detkit.assigners.chunking import check_chunk, gt_chunks, merge_best, scatter_best
from detkit.boxes import aligned_iou

__all__ = ["ATSSAssigner", "nearest_candidates"]

NOT_POSITIVE = -1.0  # candidate IoU stored for pairs that are not positive (below any real IoU)


def nearest_candidates(prior_centres: Tensor, gt_centres: Tensor, num_level_priors: Sequence[int],
                       topk: int) -> Tensor:
    """Per GT and level, the ``min(topk, level size)`` priors whose centres are nearest the GT's.

    Distances are compared squared (same order as L2). Ties go to the lower prior index, so the
    candidate set never depends on ``torch.topk``'s tie order. When a level's priors come in runs
    of ``A`` sharing one centre (``A`` anchors per location), distances are computed once per
    location: the same set, ``A`` times less work.

    Args:
        prior_centres: ``Tensor[N, 2]`` (cx, cy), levels concatenated.
        gt_centres: ``Tensor[B, M, 2]``.
        num_level_priors: prior count per level.
        topk: candidates per level.

    Returns:
        ``Tensor[B, M, K]`` long prior indices, ``K = sum(min(topk, n_l))``, ascending within a level.
    """
    out = []
    start = 0
    for n_l in num_level_priors:
        k = min(topk, n_l)
        if k:
            centres = prior_centres[start:start + n_l]  # (n_l, 2)
            a = _run_length(centres)
            if a > 1:
                loc = _smallest(_sq_distance(gt_centres, centres[::a]), -(-k // a))  # (B, M, ceil(k/A))
                prior = (loc[..., None] * a + torch.arange(a, device=loc.device)).flatten(-2)  # (B, M, kl*a)
                idx = prior[..., :k]  # (dist, location, anchor) order = (dist, prior index) order
            else:
                idx = _smallest(_sq_distance(gt_centres, centres), k)
            out.append(idx.sort(dim=-1).values + start)
        start += n_l
    return torch.cat(out, dim=-1)


def _run_length(centres: Tensor) -> int:
    """``A`` when ``centres (n, 2)`` come in runs of ``A`` equal rows (anchors of one location), else 1."""
    a = int((centres == centres[0]).all(-1).long().cumprod(0).sum())
    if a <= 1 or centres.shape[0] % a:
        return 1
    runs = centres.view(-1, a, 2)  # (n, 2) -> (n/A, A, 2)
    return a if bool((runs == runs[:, :1]).all()) else 1


def _sq_distance(gt_centres: Tensor, centres: Tensor) -> Tensor:
    """Squared distances ``(B, M, 2)`` x ``(n, 2)`` -> ``(B, M, n)``.

    When the centres form a row-major ``H x W`` grid (as prior generators make them), the distance
    is the outer sum of per-column ``dx**2`` and per-row ``dy**2``: the same values, one pass.
    """
    axes = _grid_axes(centres)
    if axes is None:
        dx = gt_centres[..., 0:1] - centres[:, 0]  # (B, M, 1) - (n,) -> (B, M, n)
        dy = gt_centres[..., 1:2] - centres[:, 1]
        return dx.mul_(dx).add_(dy.mul_(dy))
    xs, ys = axes
    dx = gt_centres[..., 0:1] - xs  # (B, M, W)
    dy = gt_centres[..., 1:2] - ys  # (B, M, H)
    dist = dy.mul_(dy)[..., :, None] + dx.mul_(dx)[..., None, :]  # (B, M, H, W)
    return dist.flatten(-2)  # (B, M, H, W) -> (B, M, H*W), row-major like the centres


def _grid_axes(centres: Tensor) -> tuple[Tensor, Tensor] | None:
    """``(xs (W,), ys (H,))`` when ``centres (n, 2)`` are the row-major grid ``ys x xs``, else None."""
    n = centres.shape[0]
    w = int((centres[:, 1] == centres[0, 1]).long().cumprod(0).sum())
    if w < 2 or n % w or n == w:
        return None
    grid = centres.view(n // w, w, 2)  # (n, 2) -> (H, W, 2)
    xs, ys = grid[0, :, 0], grid[:, 0, 1]
    if bool((grid[..., 0] == xs).all()) and bool((grid[..., 1] == ys[:, None]).all()):
        return xs, ys
    return None


def _smallest(dist: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` smallest of each row of ``dist (B, M, n)``, ordered by (value, index)."""
    n = dist.shape[-1]
    vals, idx = dist.topk(min(k + 1, n), dim=-1, largest=False, sorted=True)  # (B, M, k+1)
    if n > k:
        # The (k+1)-th smallest equal to the k-th: a tie across the cut, which topk settles in no
        # defined order; settle it by index.
        tied = vals[..., k] == vals[..., k - 1]  # (B, M)
        idx = idx[..., :k]
        if bool(tied.any()):
            idx[tied] = dist[tied].sort(dim=-1, stable=True).indices[:, :k]
    idx = idx.sort(dim=-1).values
    order = dist.gather(-1, idx).sort(dim=-1, stable=True).indices
    return idx.gather(-1, order)


class ATSSAssigner:
    """Adaptive training sample selection.

    Steps (all images and GTs at once; chunks of GTs when ``max_gt_chunk``):

    1. For each GT and each level, the ``min(topk, level size)`` priors whose centres are nearest
       (L2) the GT centre are its candidates (ties by lower prior index): ``(B, M, K)`` indices.
    2. IoU of each GT with its ``K`` candidates only (never the full ``N x M`` matrix).
    3. Threshold per GT = mean + standard deviation (Bessel's correction, N-1) of its candidates'
       IoUs; with a single candidate the deviation is taken as 0.
    4. A candidate is positive when its IoU ``>=`` the threshold and its centre lies inside the GT
       with every side margin ``> center_margin`` px (0.01 as in the reference code).
    5. A prior positive for several GTs goes to the one with the highest IoU (ties: lowest GT index).

    ATSS ignores nothing: ``ignore_mask`` is all False (crowd regions are the data pipeline's job).

    Args:
        topk: candidates per level and GT.
        center_margin: least distance (px) from a candidate's centre to every GT side.
        max_gt_chunk: process at most this many GTs at a time (bounds memory; same result); "auto"
            (default) picks it from the free memory of a CUDA device, none on CPU (chunking.auto_chunk).
    """

    uses_predictions: bool = False  # box-only: the loss pipeline need not compute pred_scores

    def __init__(self, topk: int = 9, center_margin: float = 0.01, max_gt_chunk: int | str | None = "auto") -> None:
        if not isinstance(topk, int) or topk < 1:
            raise ValueError(f"topk must be a positive int, got {topk!r}")
        self.topk = topk
        self.center_margin = float(center_margin)
        self.max_gt_chunk = check_chunk(max_gt_chunk)

    def __repr__(self) -> str:
        return f"ATSSAssigner(topk={self.topk}, center_margin={self.center_margin})"

    def assign(self, priors: Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor, *,
               num_level_priors: Sequence[int] | None = None, prior_strides: Tensor | None = None,
               pred_boxes: Tensor | None = None, pred_scores: Tensor | None = None) -> AssignResult:
        """Assign; needs ``num_level_priors`` (see :class:`AssignResult`)."""
        priors, gt = prepare_inputs(priors, gt_boxes, gt_labels, gt_mask)
        b, n = gt.batch_size, priors.shape[0]
        counts = check_level_counts(num_level_priors, n, "ATSSAssigner")
        prior_centres = (priors[:, :2] + priors[:, 2:]) / 2  # (N, 2)
        best_iou, best_gt = empty_state(b, n, priors.device, NOT_POSITIVE)
        for chunk in gt_chunks(gt.num_gts, self.max_gt_chunk, batch=b, num_priors=n, device=priors.device):
            boxes = gt.boxes[:, chunk]  # (B, Mc, 4)
            cand = nearest_candidates(prior_centres, (boxes[..., :2] + boxes[..., 2:]) / 2, counts, self.topk)
            iou, pos = self._positives(priors, prior_centres, boxes, gt.valid[:, chunk], cand)
            value = torch.where(pos, iou, torch.full_like(iou, NOT_POSITIVE))  # (B, Mc, K)
            chunk_iou, chunk_gt = scatter_best(n, cand, value, chunk.start, NOT_POSITIVE)
            best_iou, best_gt = merge_best(best_iou, best_gt, chunk_iou, chunk_gt)
        return make_result(best_gt, best_iou, gt)

    def _positives(self, priors: Tensor, prior_centres: Tensor, boxes: Tensor, valid: Tensor,
                   cand: Tensor) -> tuple[Tensor, Tensor]:
        """Steps 2-4 for one chunk: ``(iou, positive)`` of each GT's candidates, ``Tensor[B, Mc, K]`` each.

        Args:
            boxes: ``Tensor[B, Mc, 4]`` GTs; valid: ``Tensor[B, Mc]``; cand: ``Tensor[B, Mc, K]``.
        """
        iou = aligned_iou(priors[cand], boxes[:, :, None, :])  # (B, Mc, K, 4) with (B, Mc, 1, 4) -> (B, Mc, K)
        k = cand.shape[-1]
        mean = iou.mean(dim=-1, keepdim=True)  # (B, Mc, 1)
        std = iou.std(dim=-1, keepdim=True) if k > 1 else torch.zeros_like(mean)  # Bessel's correction
        centres = prior_centres[cand]  # (B, Mc, K, 2)
        margins = torch.cat([centres - boxes[:, :, None, :2], boxes[:, :, None, 2:] - centres], dim=-1)
        inside = margins.amin(dim=-1) > self.center_margin  # (B, Mc, K)
        pos = (iou >= mean + std) & inside & valid[:, :, None]
        return iou, pos
