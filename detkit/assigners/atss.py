"""ATSS: adaptive training sample selection (Zhang et al., CVPR 2020), batched, without the full
``N x M`` IoU matrix."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from detkit.assigners.base import (
    AssignResult,
    TwoFormAssigner,
    check_level_counts,
    empty_state,
    make_result,
    prepare_inputs,
)
from detkit.assigners.candidates import GridLevel, PriorLayout, prior_layout
from detkit.assigners.chunking import check_chunk, gt_chunks, merge_best, scatter_best
from detkit.boxes import aligned_iou

__all__ = ["ATSSAssigner", "nearest_candidates", "windowed_nearest_candidates"]

NOT_POSITIVE = -1.0  # candidate IoU stored for pairs that are not positive (below any real IoU)


def nearest_candidates(prior_centres: Tensor, gt_centres: Tensor, num_level_priors: Sequence[int],
                       topk: int) -> Tensor:
    """Per GT and level, the ``min(topk, level size)`` priors whose centres are nearest the GT's
    (the dense form: every prior's distance).

    Distances are compared squared (same order as L2). Ties go to the lower prior index, so the
    candidate set never depends on ``torch.topk``'s tie order.

    Args:
        prior_centres: ``Tensor[N, 2]`` (cx, cy), levels concatenated.
        gt_centres: ``Tensor[B, M, 2]``.
        num_level_priors: prior count per level.
        topk: candidates per level.

    Returns:
        ``Tensor[B, M, K]`` long prior indices, ``K = sum(min(topk, n_l))``, ascending within a level.
    """
    out, start = [], 0
    for n_l in num_level_priors:
        if min(topk, n_l):
            c = prior_centres[start:start + n_l]  # (n_l, 2)
            dx, dy = gt_centres[..., 0:1] - c[:, 0], gt_centres[..., 1:2] - c[:, 1]  # (B, M, n_l) each
            out.append(_smallest(dx * dx + dy * dy, min(topk, n_l)).sort(dim=-1).values + start)
        start += n_l
    return torch.cat(out, dim=-1)


def windowed_nearest_candidates(layout: PriorLayout, gt_centres: Tensor, topk: int) -> Tensor:
    """:func:`nearest_candidates` on grid priors, from a window of cells around each GT centre.

    Distances are computed per location (the ``A`` anchors of a cell share its centre) in a window
    of ``(2 * ceil(sqrt(k / A)) + 1)**2`` cells, shifted to stay on the grid. A GT's nearest
    locations are the window's when the k-th distance is below that of the nearest cell outside it;
    for the others the level's full row is ranked. Same result as the dense form.
    """
    out = []
    for level in layout.levels:
        k = min(topk, level.size)
        a, kl = level.anchors, -(-k // level.anchors)  # locations needed
        loc = _window_nearest(level, gt_centres, kl)  # (B, M, kl) by (distance, location index)
        prior = (loc[..., None] * a + torch.arange(a, device=loc.device)).flatten(-2)[..., :k]  # (B, M, kl*A) -> k
        out.append(prior.sort(dim=-1).values + level.start)
    return torch.cat(out, dim=-1)


def _window_nearest(level: GridLevel, gt_centres: Tensor, kl: int) -> Tensor:
    """The ``kl`` locations (``y * W + x``) of ``level`` nearest each GT centre ``(B, M, 2)``:
    ``Tensor[B, M, kl]`` ordered by (squared distance, location index)."""
    side = 2 * math.ceil(math.sqrt(kl)) + 1
    gx, gy = gt_centres[..., 0], gt_centres[..., 1]  # (B, M) each
    wx, wy = min(side, level.width), min(side, level.height)
    if wx * wy < kl:  # a grid narrower than the window: the window grows as a strip; take whole rows
        wx, wy = level.width, min(level.height, -(-kl // level.width) + 2)
    x0 = (torch.searchsorted(level.xs, gx.contiguous()) - wx // 2).clamp(0, level.width - wx)  # (B, M)
    y0 = (torch.searchsorted(level.ys, gy.contiguous()) - wy // 2).clamp(0, level.height - wy)
    cols, rows = x0[..., None] + torch.arange(wx, device=gx.device), y0[..., None] + torch.arange(wy, device=gx.device)
    dx, dy = gx[..., None] - level.xs[cols], gy[..., None] - level.ys[rows]  # (B, M, wx), (B, M, wy)
    dist = (dx * dx)[..., None, :] + (dy * dy)[..., :, None]  # (B, M, wy, wx), row-major like the locations
    pos = _smallest(dist.flatten(-2), kl)  # (B, M, kl)
    loc = rows.gather(-1, pos.div(wx, rounding_mode="floor")) * level.width + cols.gather(-1, pos.remainder(wx))
    # Every location outside the window lies beyond one of its four sides: no nearer than that side.
    inf = torch.full_like(gx, torch.inf)
    edge = torch.stack([
        torch.where(x0 > 0, gx - level.xs[(x0 - 1).clamp(min=0)], inf),
        torch.where(x0 + wx < level.width, level.xs[(x0 + wx).clamp(max=level.width - 1)] - gx, inf),
        torch.where(y0 > 0, gy - level.ys[(y0 - 1).clamp(min=0)], inf),
        torch.where(y0 + wy < level.height, level.ys[(y0 + wy).clamp(max=level.height - 1)] - gy, inf)], -1)
    outside = (edge * edge).amin(-1)  # (B, M)
    unsure = ~(dist.flatten(-2).gather(-1, pos[..., -1:])[..., 0] < outside)  # (B, M)
    if bool(unsure.any()):  # rank the level's full row of locations
        lx, ly = level.xs.repeat(level.height), level.ys.repeat_interleave(level.width)  # (H*W,) row-major
        fx, fy = gx[unsure][:, None] - lx, gy[unsure][:, None] - ly  # (U, H*W)
        loc[unsure] = _smallest(fx * fx + fy * fy, kl)
    return loc


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


class ATSSAssigner(TwoFormAssigner):
    """Adaptive training sample selection.

    Steps (all images and GTs at once; chunks of GTs when ``max_gt_chunk``):

    1. For each GT and each level, the ``min(topk, level size)`` priors whose centres are nearest
       (L2) the GT centre are its candidates (ties by lower prior index): ``(B, M, K)`` indices.
       The candidate-sparse form (``assign`` on grid priors) measures only a window of cells around
       the GT centre (:func:`windowed_nearest_candidates`); the dense form every prior.
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

    def _assign(self, priors: Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor, *,
                num_level_priors: Sequence[int] | None, prior_strides: Tensor | None, pred_boxes: Tensor | None,
                pred_scores: Tensor | None, dense: bool) -> AssignResult:
        priors, gt = prepare_inputs(priors, gt_boxes, gt_labels, gt_mask)
        b, n = gt.batch_size, priors.shape[0]
        counts = check_level_counts(num_level_priors, n, "ATSSAssigner")
        prior_centres = (priors[:, :2] + priors[:, 2:]) / 2  # (N, 2)
        layout = None if dense else prior_layout(priors, counts, prior_strides)
        best_iou, best_gt = empty_state(b, n, priors.device, NOT_POSITIVE)
        for chunk in gt_chunks(gt.num_gts, self.max_gt_chunk, batch=b, num_priors=n, device=priors.device):
            boxes = gt.boxes[:, chunk]  # (B, Mc, 4)
            gt_centres = (boxes[..., :2] + boxes[..., 2:]) / 2
            cand = (nearest_candidates(prior_centres, gt_centres, counts, self.topk) if layout is None
                    else windowed_nearest_candidates(layout, gt_centres, self.topk))  # (B, Mc, K)
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
