"""Classification losses on logits: BCE, focal, varifocal and quality focal (soft targets allowed)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from detkit.losses.base import _check_same_shape, _modulating_pow, _smooth, _WeightedLoss, reduce_loss

__all__ = [
    "BCEWithLogitsLoss", "FocalLoss", "QualityFocalLoss", "VarifocalLoss", "bce_with_logits_loss",
    "quality_focal_loss", "sigmoid_focal_loss", "varifocal_loss",
]


def bce_with_logits_loss(
    pred: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    reduction: str = "mean",
    avg_factor: float | Tensor | None = None,
    label_smoothing: float = 0.0,
    pos_weight: float | None = None,
) -> Tensor:
    """Binary cross-entropy on logits ``pred (...)`` against ``target (...)`` in [0, 1]."""
    _check_same_shape(pred, target)
    pw = None if pos_weight is None else pred.new_tensor(pos_weight, dtype=torch.float32)
    loss = F.binary_cross_entropy_with_logits(
        pred.float(), _smooth(target.float(), label_smoothing), reduction="none", pos_weight=pw
    )
    return reduce_loss(loss, weight, reduction, avg_factor)


def sigmoid_focal_loss(
    pred: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    reduction: str = "mean",
    avg_factor: float | Tensor | None = None,
    alpha: float = 0.25,
    gamma: float = 2.0,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Focal loss (Lin et al.): ``alpha_t * (1 - p_t) ** gamma * BCE``; ``alpha < 0`` disables alpha.

    ``pred (...)`` logits, ``target (...)`` in [0, 1] (soft targets are allowed: ``p_t`` and
    ``alpha_t`` interpolate linearly, as in torchvision's implementation).
    """
    _check_same_shape(pred, target)
    pred, target = pred.float(), _smooth(target.float(), label_smoothing)
    p = torch.sigmoid(pred)
    ce = F.binary_cross_entropy_with_logits(pred, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * _modulating_pow(1 - p_t, gamma)
    if alpha >= 0:
        loss = loss * (alpha * target + (1 - alpha) * (1 - target))
    return reduce_loss(loss, weight, reduction, avg_factor)


def varifocal_loss(
    pred: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    reduction: str = "mean",
    avg_factor: float | Tensor | None = None,
    alpha: float = 0.75,
    gamma: float = 2.0,
    iou_weighted: bool = True,
) -> Tensor:
    """Varifocal loss (VarifocalNet): BCE against the IoU-aware score ``target (...)``.

    Positives (``target > 0``) are weighted by ``target`` (or 1 without ``iou_weighted``);
    negatives by ``alpha * sigmoid(pred) ** gamma``.
    """
    _check_same_shape(pred, target)
    pred, target = pred.float(), target.float()
    p = torch.sigmoid(pred)
    pos = (target > 0).float()
    pos_w = target if iou_weighted else torch.ones_like(target)
    focal_weight = pos_w * pos + alpha * p.detach().pow(gamma) * (1 - pos)
    loss = F.binary_cross_entropy_with_logits(pred, target, reduction="none") * focal_weight
    return reduce_loss(loss, weight, reduction, avg_factor)


def quality_focal_loss(
    pred: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    reduction: str = "mean",
    avg_factor: float | Tensor | None = None,
    beta: float = 2.0,
) -> Tensor:
    """Quality focal loss (GFL): ``|target - sigmoid(pred)| ** beta * BCE`` with soft ``target (...)``."""
    _check_same_shape(pred, target)
    pred, target = pred.float(), target.float()
    scale = _modulating_pow((target - torch.sigmoid(pred)).abs(), beta)
    loss = F.binary_cross_entropy_with_logits(pred, target, reduction="none") * scale
    return reduce_loss(loss, weight, reduction, avg_factor)


class BCEWithLogitsLoss(_WeightedLoss):
    """Module form of :func:`bce_with_logits_loss`: ``forward(pred, target, weight=None, avg_factor=None)``
    on logits ``pred (...)`` and targets ``(...)`` in [0, 1].

    Args:
        reduction: ``"none"``, ``"mean"`` or ``"sum"`` (``forward``'s ``reduction_override`` wins).
        loss_weight: factor on the loss.
        label_smoothing: targets moved towards 0.5 by this fraction.
        pos_weight: weight of the positive term (``torch``'s ``pos_weight``), or None.

    Raises:
        ValueError: an unknown ``reduction`` or a ``label_smoothing`` outside [0, 1).
    """

    _fn = staticmethod(bce_with_logits_loss)

    def __init__(self, reduction: str = "mean", loss_weight: float = 1.0, label_smoothing: float = 0.0,
                 pos_weight: float | None = None) -> None:
        super().__init__(reduction, loss_weight)
        _smooth(torch.zeros(()), label_smoothing)  # validates
        self._kwargs = dict(label_smoothing=label_smoothing, pos_weight=pos_weight)


class FocalLoss(_WeightedLoss):
    """Module form of :func:`sigmoid_focal_loss` (logits ``pred (...)``, targets ``(...)`` in [0, 1]).

    Args:
        reduction: ``"none"``, ``"mean"`` or ``"sum"`` (``forward``'s ``reduction_override`` wins).
        loss_weight: factor on the loss.
        alpha: weight of the positives (negatives ``1 - alpha``); below 0: no weighting.
        gamma: focusing exponent on ``1 - p_t``.
        label_smoothing: targets moved towards 0.5 by this fraction.

    Raises:
        ValueError: an unknown ``reduction`` or a ``label_smoothing`` outside [0, 1).
    """

    _fn = staticmethod(sigmoid_focal_loss)

    def __init__(self, reduction: str = "mean", loss_weight: float = 1.0, alpha: float = 0.25,
                 gamma: float = 2.0, label_smoothing: float = 0.0) -> None:
        super().__init__(reduction, loss_weight)
        _smooth(torch.zeros(()), label_smoothing)
        self._kwargs = dict(alpha=alpha, gamma=gamma, label_smoothing=label_smoothing)


class VarifocalLoss(_WeightedLoss):
    """Module form of :func:`varifocal_loss` (logits ``pred (...)``, IoU-aware targets ``(...)``).

    Args:
        reduction: ``"none"``, ``"mean"`` or ``"sum"`` (``forward``'s ``reduction_override`` wins).
        loss_weight: factor on the loss.
        alpha: weight of the negatives' ``sigmoid(pred) ** gamma``.
        gamma: exponent on the negatives' predicted score.
        iou_weighted: weight positives by their target (else 1).

    Raises:
        ValueError: an unknown ``reduction``.
    """

    _fn = staticmethod(varifocal_loss)

    def __init__(self, reduction: str = "mean", loss_weight: float = 1.0, alpha: float = 0.75,
                 gamma: float = 2.0, iou_weighted: bool = True) -> None:
        super().__init__(reduction, loss_weight)
        self._kwargs = dict(alpha=alpha, gamma=gamma, iou_weighted=iou_weighted)


class QualityFocalLoss(_WeightedLoss):
    """Module form of :func:`quality_focal_loss` (logits ``pred (...)``, soft targets ``(...)``).

    Args:
        reduction: ``"none"``, ``"mean"`` or ``"sum"`` (``forward``'s ``reduction_override`` wins).
        loss_weight: factor on the loss.
        beta: exponent on ``|target - sigmoid(pred)|``.

    Raises:
        ValueError: an unknown ``reduction``.
    """

    _fn = staticmethod(quality_focal_loss)

    def __init__(self, reduction: str = "mean", loss_weight: float = 1.0, beta: float = 2.0) -> None:
        super().__init__(reduction, loss_weight)
        self._kwargs = dict(beta=beta)
