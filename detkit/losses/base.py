"""What every loss shares: weighting and reduction (``reduce_loss``), shape and smoothing helpers,
and the ``nn.Module`` wrapper that gives a loss function ``loss_weight`` and a default reduction."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["REDUCTIONS", "reduce_loss"]

REDUCTIONS = ("none", "mean", "sum")


def reduce_loss(
    loss: Tensor, weight: Tensor | None = None, reduction: str = "mean", avg_factor: float | Tensor | None = None
) -> Tensor:
    """Weight and reduce an element-wise loss.

    Args:
        loss: ``Tensor[...]`` element-wise loss.
        weight: broadcastable to ``loss``; None for 1.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        avg_factor: with ``"mean"``, the divisor replacing the element count.

    Returns:
        ``loss``'s shape for ``"none"``, else a scalar.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; accepted: {', '.join(REDUCTIONS)}")
    if weight is not None:
        loss = loss * weight
    if reduction == "none":
        return loss
    if reduction == "sum":
        if avg_factor is not None:
            raise ValueError("avg_factor only applies to reduction='mean', got reduction='sum'")
        return loss.sum()
    if avg_factor is None:
        return loss.mean() if loss.numel() else loss.sum()  # an empty mean would be NaN
    return loss.sum() / avg_factor


def _smooth(target: Tensor, label_smoothing: float) -> Tensor:
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if label_smoothing == 0.0:
        return target
    return target * (1.0 - label_smoothing) + 0.5 * label_smoothing


def _modulating_pow(base: Tensor, exponent: float) -> Tensor:
    """``base ** exponent`` for ``base >= 0`` whose gradient stays finite at ``base == 0``.

    For ``0 < exponent < 1`` the derivative of ``x ** exponent`` is infinite at 0, where the
    focal-style losses' other factor is 0 (a prediction equal to its target), and ``inf * 0``
    would make the whole gradient NaN. There the power is taken of 1 instead and masked to 0.
    """
    if exponent == 0 or exponent >= 1:
        return base.pow(exponent)
    positive = base > 0
    return torch.where(positive, torch.where(positive, base, torch.ones_like(base)).pow(exponent), 0.0)


def _check_same_shape(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")


class _WeightedLoss(nn.Module):
    """``forward(pred, target, weight=None, avg_factor=None, reduction_override=None)`` times
    ``loss_weight``; subclasses set ``_fn`` and the extra keyword arguments in ``_kwargs``."""

    # Where the pipeline applies a regression loss: on decoded boxes or on encoded targets.
    input_space = "boxes"

    def __init__(self, reduction: str = "mean", loss_weight: float = 1.0) -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}; accepted: {', '.join(REDUCTIONS)}")
        self.reduction = reduction
        self.loss_weight = float(loss_weight)
        self._kwargs: dict[str, Any] = {}

    @staticmethod
    def _fn(*args: Any, **kwargs: Any) -> Tensor:
        raise NotImplementedError

    def forward(
        self,
        pred: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | Tensor | None = None,
        reduction_override: str | None = None,
    ) -> Tensor:
        reduction = reduction_override or self.reduction
        return self.loss_weight * self._fn(
            pred, target, weight=weight, reduction=reduction, avg_factor=avg_factor, **self._kwargs
        )

    def extra_repr(self) -> str:
        args = {"reduction": self.reduction, "loss_weight": self.loss_weight, **self._kwargs}
        return ", ".join(f"{k}={v!r}" for k, v in args.items())
