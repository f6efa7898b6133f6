"""What an assigner did: per-GT positive counts, unmatched GTs by size and level, IoU of positives.

Used by ``tools/compare_assigners.py`` (over a whole dataset, no training needed) and by the
training loop's per-epoch assignment statistics. Sizes follow COCO's convention: small < 32²,
medium < 96², large otherwise, measured in original-image pixels (pass ``area_scale`` to undo a
letterbox resize).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from detkit.boxes import box_area, box_iou, valid_gt_mask

__all__ = ["SIZE_NAMES", "AssignmentStats", "gt_levels", "positives_per_gt", "size_bucket"]

SIZE_NAMES = ("small", "medium", "large")
SMALL_AREA, MEDIUM_AREA = 32.0**2, 96.0**2  # COCO's object-size boundaries (pixels²)


def positives_per_gt(gt_index: Tensor, pos_mask: Tensor, num_gts: int) -> Tensor:
    """Count the positive priors of each GT.

    Args:
        gt_index: ``Tensor[B, N]`` long, assigned GT (any value where not positive).
        pos_mask: ``Tensor[B, N]`` bool.
        num_gts: M, the padded GT count.

    Returns:
        ``Tensor[B, M]`` long counts.
    """
    b = gt_index.shape[0]
    # Non-positives go to an extra bin M that is dropped afterwards.
    idx = torch.where(pos_mask, gt_index.clamp(min=0), torch.full_like(gt_index, num_gts))
    counts = torch.zeros(b, num_gts + 1, dtype=torch.long, device=gt_index.device)
    counts.scatter_add_(1, idx, torch.ones_like(idx))
    return counts[:, :num_gts]


def gt_levels(priors: Tensor, gt_boxes: Tensor, num_level_priors: list[int]) -> Tensor:
    """The pyramid level of each GT: the level of the prior with the highest IoU with it.

    Args:
        priors: ``Tensor[N, 4]`` xyxy, ordered level by level.
        gt_boxes: ``Tensor[B, M, 4]`` xyxy.
        num_level_priors: prior count per level.

    Returns:
        ``Tensor[B, M]`` long level index.
    """
    best = box_iou(gt_boxes, priors.expand(gt_boxes.shape[0], -1, -1)).argmax(-1)  # (B, M)
    bounds = torch.tensor(np.cumsum(num_level_priors), device=best.device)
    return torch.bucketize(best, bounds, right=True)


def size_bucket(areas: Tensor) -> Tensor:
    """``Tensor[...]`` areas (pixels²) -> ``Tensor[...]`` long: 0 small, 1 medium, 2 large."""
    return (areas >= SMALL_AREA).long() + (areas >= MEDIUM_AREA).long()


@dataclass
class AssignmentStats:
    """Accumulates statistics of one assigner over many batches."""

    num_levels: int
    counts: list[np.ndarray] = field(default_factory=list)  # positives per valid GT
    sizes: list[np.ndarray] = field(default_factory=list)  # size bucket per valid GT
    levels: list[np.ndarray] = field(default_factory=list)  # level per valid GT
    pos_iou_sum: float = 0.0
    num_pos: int = 0
    pos_per_level: np.ndarray | None = None

    def update(
        self,
        gt_index: Tensor,
        pos_mask: Tensor,
        iou: Tensor,
        gt_boxes: Tensor,
        gt_mask: Tensor,
        priors: Tensor,
        num_level_priors: list[int],
        area_scale: Tensor | None = None,
    ) -> None:
        """Add one batch.

        Args:
            gt_index: ``Tensor[B, N]`` int64 from an AssignResult (-1: no GT).
            pos_mask: ``Tensor[B, N]`` bool from an AssignResult.
            iou: ``Tensor[B, N]`` from an AssignResult.
            gt_boxes: ``Tensor[B, M, 4]`` xyxy.
            gt_mask: ``Tensor[B, M]`` bool (padding False).
            priors: ``Tensor[N, 4]``.
            num_level_priors: prior count per level.
            area_scale: ``Tensor[B]`` factor turning input-pixel areas into original-pixel areas.
        """
        valid = valid_gt_mask(gt_boxes, gt_mask)
        counts = positives_per_gt(gt_index, pos_mask, gt_boxes.shape[1])
        areas = box_area(gt_boxes)
        if area_scale is not None:
            areas = areas * area_scale.to(areas)[:, None]
        self.counts.append(counts[valid].cpu().numpy())
        self.sizes.append(size_bucket(areas)[valid].cpu().numpy())
        self.levels.append(gt_levels(priors, gt_boxes, num_level_priors)[valid].cpu().numpy())
        self.pos_iou_sum += float(iou[pos_mask].double().sum())
        self.num_pos += int(pos_mask.sum())
        per_level = torch.stack([m.sum() for m in pos_mask.split(num_level_priors, dim=1)]).cpu().numpy()
        self.pos_per_level = per_level if self.pos_per_level is None else self.pos_per_level + per_level

    def all_counts(self) -> np.ndarray:
        """Positives of every GT seen, ``(G,)``."""
        return np.concatenate(self.counts) if self.counts else np.zeros(0, dtype=np.int64)

    def summary(self) -> dict[str, float]:
        """Flat dict: positives per GT (mean/median/min/max), unmatched GTs by size and level,
        mean IoU of positives, positives per level (count and share)."""
        counts = self.all_counts()
        sizes = np.concatenate(self.sizes) if self.sizes else np.zeros(0, dtype=np.int64)
        levels = np.concatenate(self.levels) if self.levels else np.zeros(0, dtype=np.int64)
        n = len(counts)
        unmatched = counts == 0
        out: dict[str, float] = {
            "num_gt": float(n),
            "pos_per_gt_mean": float(counts.mean()) if n else 0.0,
            "pos_per_gt_median": float(np.median(counts)) if n else 0.0,
            "pos_per_gt_min": float(counts.min()) if n else 0.0,
            "pos_per_gt_max": float(counts.max()) if n else 0.0,
            "gt_no_pos": float(unmatched.sum()),
            "gt_no_pos_pct": float(100.0 * unmatched.mean()) if n else 0.0,
            "pos_iou_mean": self.pos_iou_sum / self.num_pos if self.num_pos else 0.0,
            "num_pos": float(self.num_pos),
        }
        for i, name in enumerate(SIZE_NAMES):
            sel = sizes == i
            out[f"gt_{name}"] = float(sel.sum())
            out[f"gt_no_pos_{name}"] = float((unmatched & sel).sum())
            out[f"gt_no_pos_{name}_pct"] = float(100.0 * (unmatched & sel).sum() / max(sel.sum(), 1))
        per_level = self.pos_per_level if self.pos_per_level is not None else np.zeros(self.num_levels)
        for lvl in range(self.num_levels):
            sel = levels == lvl
            out[f"gt_no_pos_level{lvl}"] = float((unmatched & sel).sum())
            out[f"pos_level{lvl}"] = float(per_level[lvl])
            out[f"pos_level{lvl}_pct"] = float(100.0 * per_level[lvl] / max(self.num_pos, 1))
        return out
