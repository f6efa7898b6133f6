"""ATSS: adaptive training sample selection (Zhang et al., CVPR 2020), batched, without the full
``N x M`` IoU matrix."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from detkit.anchors import GridLevel, PriorGrid
from detkit.assigners.base import AssignResult, Priors, make_result, prepare
from detkit.assigners.candidates import PriorBest, current_pair_budget, gt_rows, topk_rows
from detkit.assigners.threads import limit_assign_threads
from detkit.boxes import aligned_iou

__all__ = ["ATSSAssigner", "nearest_candidates"]

NOT_POSITIVE = -1.0  # candidate IoU stored for pairs that are not positive (below any real IoU)
WINDOW_COST = 64  # pairs a GT's windows cost per level, for the pair budget (a 7 x 7 window and its distances)


def nearest_candidates(priors: Priors, gt_centres: Tensor, topk: int) -> Tensor:
    """Per GT and level, the ``min(topk, level size)`` priors whose centres are nearest (L2) the GT's:
    ATSS's candidate table, ``topk`` pairs per GT and level.

    Distances are compared squared (same order as L2); ties go to the lower prior index
    (:func:`~detkit.assigners.candidates.topk_rows`). On a :class:`~detkit.anchors.PriorGrid` a level's
    candidates come from a window of cells around the GT centre (:func:`window_nearest`); on bare priors
    (or a level whose anchors do not share their cell's centre) from the distances to every prior of
    the level. Both give the same candidates.

    Args:
        priors: the call's priors; needs the level counts.
        gt_centres: ``Tensor[G, 2]`` (cx, cy).
        topk: candidates per level.

    Returns:
        ``Tensor[G, K]`` long prior indices, ``K = sum(min(topk, n_l))``, ascending within a level.
    """
    out, start = [], 0
    levels = priors.grid.levels if priors.grid is not None else None
    for i, n_l in enumerate(priors.level_counts("ATSSAssigner")):
        k = min(topk, n_l)
        if k:
            if levels is not None and levels[i].shared_centres:
                out.append(window_nearest(levels[i], gt_centres, k))
            else:
                c = priors.centres[start:start + n_l]  # (n_l, 2)
                dx, dy = gt_centres[:, 0:1] - c[:, 0], gt_centres[:, 1:2] - c[:, 1]  # (G, n_l) each
                out.append(topk_rows(dx * dx + dy * dy, k, largest=False).sort(dim=-1).values + start)
        start += n_l
    return torch.cat(out, dim=-1) if out else gt_centres.new_zeros(gt_centres.shape[0], 0, dtype=torch.long)


def window_nearest(level: GridLevel, gt_centres: Tensor, k: int) -> Tensor:
    """The ``k`` priors of a grid ``level`` nearest each GT centre ``(G, 2)``, from a window of cells:
    ``Tensor[G, k]`` long prior indices, ascending (the level's ``start`` included).

    Distances are computed per location (the ``A`` anchors of a cell share its centre) in a window
    of ``(2 * ceil(sqrt(k / A)) + 1)**2`` cells, shifted to stay on the grid. A GT's nearest
    locations are the window's when the k-th distance is below that of the nearest cell outside it;
    for the others the level's full row is ranked. Same candidates as distances to every prior.
    """
    a, kl = level.anchors, -(-k // level.anchors)  # locations needed
    loc = _window_locations(level, gt_centres, kl)  # (G, kl) by (distance, location index)
    prior = (loc[..., None] * a + torch.arange(a, device=loc.device)).flatten(-2)[..., :k]  # (G, kl*A) -> k
    return prior.sort(dim=-1).values + level.start


def _window_locations(level: GridLevel, gt_centres: Tensor, kl: int) -> Tensor:
    """The ``kl`` locations (``y * W + x``) of ``level`` nearest each GT centre ``(G, 2)``:
    ``Tensor[G, kl]`` ordered by (squared distance, location index)."""
    side = 2 * math.ceil(math.sqrt(kl)) + 1
    gx, gy = gt_centres[:, 0], gt_centres[:, 1]  # (G,) each
    wx, wy = min(side, level.width), min(side, level.height)
    if wx * wy < kl:  # a grid narrower than the window: the window grows as a strip; take whole rows
        wx, wy = level.width, min(level.height, -(-kl // level.width) + 2)
    x0 = (torch.searchsorted(level.xs, gx.contiguous()) - wx // 2).clamp(0, level.width - wx)  # (G,)
    y0 = (torch.searchsorted(level.ys, gy.contiguous()) - wy // 2).clamp(0, level.height - wy)
    cols, rows = x0[:, None] + torch.arange(wx, device=gx.device), y0[:, None] + torch.arange(wy, device=gx.device)
    dx, dy = gx[:, None] - level.xs[cols], gy[:, None] - level.ys[rows]  # (G, wx), (G, wy)
    dist = ((dx * dx)[:, None, :] + (dy * dy)[:, :, None]).flatten(-2)  # (G, wy, wx) -> (G, wy*wx), row-major
    pos = topk_rows(dist, kl, largest=False)  # (G, kl)
    loc = rows.gather(-1, pos.div(wx, rounding_mode="floor")) * level.width + cols.gather(-1, pos.remainder(wx))
    # Every location outside the window lies beyond one of its four sides: no nearer than that side.
    inf = torch.full_like(gx, torch.inf)
    edge = torch.stack([
        torch.where(x0 > 0, gx - level.xs[(x0 - 1).clamp(min=0)], inf),
        torch.where(x0 + wx < level.width, level.xs[(x0 + wx).clamp(max=level.width - 1)] - gx, inf),
        torch.where(y0 > 0, gy - level.ys[(y0 - 1).clamp(min=0)], inf),
        torch.where(y0 + wy < level.height, level.ys[(y0 + wy).clamp(max=level.height - 1)] - gy, inf)], -1)
    outside = (edge * edge).amin(-1)  # (G,)
    unsure = ~(dist.gather(-1, pos[:, -1:])[:, 0] < outside)  # (G,)
    if bool(unsure.any()):  # rank the level's full row of locations
        lx, ly = level.xs.repeat(level.height), level.ys.repeat_interleave(level.width)  # (H*W,) row-major
        fx, fy = gx[unsure][:, None] - lx, gy[unsure][:, None] - ly  # (U, H*W)
        loc[unsure] = topk_rows(fx * fx + fy * fy, kl, largest=False)
    return loc


class ATSSAssigner:
    """Adaptive training sample selection.

    Steps (all images and GTs at once, over ATSS's candidate table: ``K`` priors per GT):

    1. For each GT and each level, the ``min(topk, level size)`` priors whose centres are nearest
       (L2) the GT centre are its candidates (ties by lower prior index), :func:`nearest_candidates`
       (on a :class:`~detkit.anchors.PriorGrid` from a window of cells around the GT centre; on bare
       priors, which need ``num_level_priors``, from every prior of the level).
    2. IoU of each GT with its ``K`` candidates only (never the full ``N x M`` matrix).
    3. Threshold per GT = mean + standard deviation (Bessel's correction, N-1) of its candidates'
       IoUs; with a single candidate the deviation is taken as 0.
    4. A candidate is positive when its IoU ``>=`` the threshold and its centre lies inside the GT
       with every side margin ``> center_margin`` px (0.01 as in the reference code).
    5. A prior positive for several GTs goes to the one with the highest IoU (ties: lowest GT index).

    ATSS ignores nothing: ``ignore_mask`` is all False (crowd regions are the data pipeline's job).
    Memory: GTs are taken in chunks whose candidate search (windows, or every prior of bare priors)
    stays within the pair budget (:func:`~detkit.assigners.candidates.pair_budget`).

    Args:
        topk: candidates per level and GT.
        center_margin: least distance (px) from a candidate's centre to every GT side.
    """

    uses_predictions: bool = False  # box-only: the loss pipeline need not compute pred_scores

    def __init__(self, topk: int = 9, center_margin: float = 0.01) -> None:
        if not isinstance(topk, int) or topk < 1:
            raise ValueError(f"topk must be a positive int, got {topk!r}")
        self.topk = topk
        self.center_margin = float(center_margin)

    def __repr__(self) -> str:
        return f"ATSSAssigner(topk={self.topk}, center_margin={self.center_margin})"

    @limit_assign_threads
    def assign(self, priors: PriorGrid | Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor, *,
               num_level_priors: Sequence[int] | None = None, prior_strides: Tensor | None = None,
               pred_boxes: Tensor | None = None, pred_scores: Tensor | None = None) -> AssignResult:
        """Assign (see :class:`~detkit.assigners.base.Assigner`); ``pred_*`` are not used."""
        p, gt = prepare(priors, gt_boxes, gt_labels, gt_mask, num_level_priors=num_level_priors,
                        prior_strides=prior_strides)
        counts = p.level_counts("ATSSAssigner")
        n = p.num_priors
        best = PriorBest(gt.batch_size, n, p.device, NOT_POSITIVE)
        image, slot = gt_rows(gt.valid)  # (G,) each
        search = len(counts) * WINDOW_COST if p.grid is not None else n  # pairs looked at per GT
        step = max(1, current_pair_budget() // search)
        for first in range(0, int(image.shape[0]), step):
            img, slt = image[first:first + step], slot[first:first + step]  # (Gc,) each
            boxes = gt.boxes[img, slt]  # (Gc, 4)
            cand = nearest_candidates(p, (boxes[:, :2] + boxes[:, 2:]) / 2, self.topk)  # (Gc, K)
            iou, pos = self._positives(p, boxes, cand)
            value = torch.where(pos, iou, torch.full_like(iou, NOT_POSITIVE))  # (Gc, K)
            best.update((img[:, None] * n + cand).flatten(), value.flatten(),
                        slt[:, None].expand_as(cand).flatten())  # (Gc, K) -> (Gc*K,)
        best_iou, best_gt = best.result()
        return make_result(best_gt, best_iou, gt)

    def _positives(self, p: Priors, boxes: Tensor, cand: Tensor) -> tuple[Tensor, Tensor]:
        """Steps 2-4: ``(iou, positive)`` of each GT's candidates, ``Tensor[G, K]`` each.

        Args:
            boxes: ``Tensor[G, 4]`` valid GTs; cand: ``Tensor[G, K]`` their candidate priors.
        """
        iou = aligned_iou(p.boxes[cand], boxes[:, None, :])  # (G, K, 4) with (G, 1, 4) -> (G, K)
        k = cand.shape[-1]
        mean = iou.mean(dim=-1, keepdim=True)  # (G, 1)
        std = iou.std(dim=-1, keepdim=True) if k > 1 else torch.zeros_like(mean)  # Bessel's correction
        centres = p.centres[cand]  # (G, K, 2)
        margins = torch.cat([centres - boxes[:, None, :2], boxes[:, None, 2:] - centres], dim=-1)
        inside = margins.amin(dim=-1) > self.center_margin  # (G, K)
        return iou, (iou >= mean + std) & inside
