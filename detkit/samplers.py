"""Samplers: which assigned priors the losses see, batched over images.

A sampler reads an assigner's result (``(B, N)`` tensors, see :mod:`detkit.assigners`) and
returns a :class:`SampleResult` of two ``(B, N)`` bool masks: the priors that enter the
positive losses and those that enter the negative (background / objectness-0) losses. Ignored
priors (``assign_result.ignore_mask``) are never negatives.

* :class:`PseudoSampler` keeps every positive and every non-ignored negative (YOLO, ATSS, FCOS).
* :class:`RandomSampler` draws at most ``num`` priors per image, ``pos_fraction`` of them
  positive (Faster R-CNN's RPN/R-CNN). It is vectorised over the batch: each candidate gets a
  random key and per image the ``quota`` largest keys win (one ``topk`` for the whole batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

__all__ = ["PseudoSampler", "RandomSampler", "SampleResult", "Sampler"]


@dataclass
class SampleResult:
    """Sampled priors.

    Attributes:
        pos_mask: ``Tensor[B, N]`` bool, priors in the positive losses (a subset of the
            assigner's positives).
        neg_mask: ``Tensor[B, N]`` bool, priors in the negative losses (never positive nor
            ignored).
    """

    pos_mask: Tensor
    neg_mask: Tensor

    @property
    def num_pos(self) -> Tensor:
        """``Tensor[B]`` long, positives per image."""
        return self.pos_mask.sum(dim=1)

    @property
    def num_neg(self) -> Tensor:
        """``Tensor[B]`` long, negatives per image."""
        return self.neg_mask.sum(dim=1)


class Sampler(Protocol):
    def sample(self, assign_result: Any) -> SampleResult: ...


def _candidates(assign_result: Any) -> tuple[Tensor, Tensor]:
    """``(pos, neg)`` ``(B, N)`` bool masks of every positive and every non-ignored negative."""
    pos = assign_result.pos_mask.bool()
    neg = ~pos & ~assign_result.ignore_mask.bool()
    return pos, neg


class PseudoSampler:
    """Keeps every positive and every non-ignored, non-positive prior as a negative."""

    def sample(self, assign_result: Any) -> SampleResult:
        """``assign_result`` with ``(B, N)`` ``pos_mask`` and ``ignore_mask`` -> :class:`SampleResult`."""
        pos, neg = _candidates(assign_result)
        return SampleResult(pos_mask=pos, neg_mask=neg)

    def __repr__(self) -> str:
        return "PseudoSampler()"


class RandomSampler:
    """Uniformly samples up to ``num`` priors per image, ``pos_fraction`` of them positive.

    Per image (all images at once):

    1. positives wanted ``= int(num * pos_fraction)``; draw ``min(that, available)`` of them;
    2. negatives wanted ``= num - positives drawn``, capped at ``int(neg_pos_ub * max(1, pos))``
       when ``neg_pos_ub >= 0``; draw ``min(that, available)`` non-ignored negatives.

    Args:
        num: priors per image to sample in total.
        pos_fraction: the largest share of positives, in [0, 1].
        neg_pos_ub: upper bound of the negative/positive ratio; ``-1`` for none.
        seed: seeds a private ``torch.Generator`` (CPU) for reproducible draws.
        generator: a generator to draw from (overrides ``seed``); keys are drawn on its device.
    """

    def __init__(
        self,
        num: int,
        pos_fraction: float,
        neg_pos_ub: float = -1,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if num < 1:
            raise ValueError(f"num must be a positive number of priors per image, got {num}")
        if not 0.0 <= pos_fraction <= 1.0:
            raise ValueError(f"pos_fraction must be in [0, 1], got {pos_fraction}")
        if neg_pos_ub < 0 and neg_pos_ub != -1:
            raise ValueError(f"neg_pos_ub must be >= 0, or -1 for no bound; got {neg_pos_ub}")
        self.num = int(num)
        self.pos_fraction = float(pos_fraction)
        self.neg_pos_ub = neg_pos_ub
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(seed)
        self.generator = generator

    def _random_keys(self, shape: torch.Size, device: torch.device) -> Tensor:
        if self.generator is None:
            return torch.rand(shape, device=device)
        return torch.rand(shape, generator=self.generator, device=self.generator.device).to(device)

    def _draw(self, candidates: Tensor, quota: Tensor) -> Tensor:
        """Up to ``quota[b]`` random ``True`` entries of each row of ``candidates (B, N)``.

        Returns:
            ``Tensor[B, N]`` bool, a subset of ``candidates`` with ``min(quota, count)`` per row.
        """
        b, n = candidates.shape
        k = min(n, self.num)
        if k == 0:
            return torch.zeros_like(candidates)
        keys = self._random_keys(candidates.shape, candidates.device)
        keys = torch.where(candidates, keys, torch.full_like(keys, -1.0))  # non-candidates lose
        top_keys, top_idx = keys.topk(k, dim=1)  # (B, k), largest keys first
        rank = torch.arange(k, device=candidates.device).expand(b, k)
        take = (rank < quota[:, None]) & (top_keys >= 0)
        out = torch.zeros_like(candidates)
        return out.scatter(1, top_idx, take)

    def sample(self, assign_result: Any) -> SampleResult:
        """``assign_result`` with ``(B, N)`` ``pos_mask`` and ``ignore_mask`` -> :class:`SampleResult`."""
        pos, neg = _candidates(assign_result)
        pos_quota = torch.full((pos.shape[0],), int(self.num * self.pos_fraction), device=pos.device)
        pos_mask = self._draw(pos, pos_quota)
        num_pos = pos_mask.sum(dim=1)
        neg_quota = self.num - num_pos
        if self.neg_pos_ub >= 0:
            upper = (self.neg_pos_ub * num_pos.clamp(min=1)).long()
            neg_quota = torch.minimum(neg_quota, upper)
        neg_mask = self._draw(neg, neg_quota)
        return SampleResult(pos_mask=pos_mask, neg_mask=neg_mask)

    def __repr__(self) -> str:
        return f"RandomSampler(num={self.num}, pos_fraction={self.pos_fraction}, neg_pos_ub={self.neg_pos_ub})"
