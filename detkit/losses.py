"""Detection losses as functions with ``weight``, ``reduction`` and ``avg_factor``, plus thin
``nn.Module`` wrappers for configs (``L(FocalLoss)(gamma=2.0)``).

Every function computes an element-wise loss, multiplies it by ``weight`` (broadcastable to the
element-wise loss) and reduces it:

* ``reduction="none"``: the weighted element-wise loss;
* ``"sum"``: its sum;
* ``"mean"``: its mean, or ``sum / avg_factor`` when ``avg_factor`` is given (the caller's one
  normaliser, e.g. the number of positives: normalisation happens once, outside the loss).

Classification losses take raw logits ``pred (..., C)`` and a float ``target`` of the same
shape (one-hot, or soft scores for varifocal / quality focal); ``label_smoothing=eps`` moves the
binary targets to ``eps / 2`` and ``1 - eps / 2`` (YOLOv5's smoothing for sigmoid outputs).
Regression losses take ``(..., 4)`` inputs; IoU-family losses take xyxy boxes and give one
value per box. Everything is computed in fp32 and is finite (with finite gradients) on
degenerate boxes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detkit.boxes import IOU_MODES, aligned_iou

__all__ = [
    "BCEWithLogitsLoss",
    "DistributionFocalLoss",
    "FocalLoss",
    "IoULoss",
    "L1Loss",
    "QualityFocalLoss",
    "SmoothL1Loss",
    "VarifocalLoss",
    "bce_with_logits_loss",
    "distribution_focal_loss",
    "iou_loss",
    "l1_loss",
    "quality_focal_loss",
    "reduce_loss",
    "sigmoid_focal_loss",
    "smooth_l1_loss",
    "varifocal_loss",
]

REDUCTIONS = ("none", "mean", "sum")
IOU_PENALTIES = ("linear", "square", "log")
# -log(IoU) is computed on IoU clamped to at least this (mmdetection's IoULoss(mode="log") eps).
LOG_IOU_EPS = 1e-6


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


def iou_loss(
    pred: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    reduction: str = "mean",
    avg_factor: float | Tensor | None = None,
    mode: str = "iou",
    penalty: str = "linear",
) -> Tensor:
    """IoU-family loss between matching xyxy boxes ``pred (..., 4)`` and ``target (..., 4)``; the
    element-wise loss has shape ``(...)``.

    ``penalty="linear"``: ``1 - IoU`` (or GIoU / DIoU / CIoU), in [0, 1] for IoU, [0, 2] for GIoU /
    DIoU and [0, 3) for CIoU (its aspect term adds at most 1) when the boxes are well formed
    (x1 <= x2, y1 <= y2); inverted boxes give finite values outside that range.
    ``"square"``: ``1 - IoU**2`` (YOLOX) and ``"log"``: ``-log(max(IoU, 1e-6))`` (UnitBox), both for
    ``mode="iou"`` only."""
    _check_same_shape(pred, target)
    if mode not in IOU_MODES:
        raise ValueError(f"unknown IoU mode {mode!r}; accepted: {', '.join(IOU_MODES)}")
    _check_penalty(mode, penalty)
    iou = aligned_iou(pred, target, mode=mode)
    if penalty == "square":
        loss = 1.0 - iou * iou
    elif penalty == "log":
        loss = -torch.log(iou.clamp(min=LOG_IOU_EPS))
    else:
        loss = 1.0 - iou
    return reduce_loss(loss, weight, reduction, avg_factor)


def _check_penalty(mode: str, penalty: str) -> None:
    if penalty not in IOU_PENALTIES:
        raise ValueError(f"unknown IoU penalty {penalty!r}; accepted: {', '.join(IOU_PENALTIES)}")
    if penalty != "linear" and mode != "iou":
        raise ValueError(f"penalty {penalty!r} is defined for mode='iou' only, got mode={mode!r}")


def distribution_focal_loss(
    pred: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    reduction: str = "mean",
    avg_factor: float | Tensor | None = None,
) -> Tensor:
    """Distribution Focal Loss (GFL, Li et al. 2020) of bin logits against continuous targets.

    A target distance ``y`` between bins ``i = floor(y)`` and ``i + 1`` is learnt as cross-entropy
    towards both, weighted by closeness: ``(i + 1 - y) * CE(pred, i) + (y - i) * CE(pred, i + 1)``.

    Args:
        pred: ``Tensor[..., K]`` logits over K bins (distances 0..K-1).
        target: ``Tensor[...]`` distances in ``[0, K - 1)`` (as :class:`~detkit.coders.DFLCoder`
            encodes them).

    Returns:
        element-wise ``Tensor[...]``, weighted and reduced as the other losses.
    """
    if pred.shape[:-1] != target.shape:
        raise ValueError(f"pred must be target's shape plus a bins dimension, got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    bins = pred.shape[-1]
    target = target.float().clamp(0, bins - 1 - 1e-6)  # the right bin must exist
    left = target.floor().long()
    w_left = (left + 1).float() - target
    log_p = F.log_softmax(pred.float(), dim=-1)
    ce_left = -log_p.gather(-1, left[..., None])[..., 0]
    ce_right = -log_p.gather(-1, (left + 1)[..., None])[..., 0]
    loss = ce_left * w_left + ce_right * (1.0 - w_left)
    return reduce_loss(loss, weight, reduction, avg_factor)


def l1_loss(
    pred: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    reduction: str = "mean",
    avg_factor: float | Tensor | None = None,
) -> Tensor:
    """``|pred - target|`` element-wise."""
    _check_same_shape(pred, target)
    return reduce_loss((pred.float() - target.float()).abs(), weight, reduction, avg_factor)


def smooth_l1_loss(
    pred: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    reduction: str = "mean",
    avg_factor: float | Tensor | None = None,
    beta: float = 1.0,
) -> Tensor:
    """Huber-style smooth L1: ``0.5 d^2 / beta`` for ``|d| < beta``, else ``|d| - 0.5 beta``."""
    _check_same_shape(pred, target)
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    d = (pred.float() - target.float()).abs()
    loss = d - 0.5 * beta if beta == 0 else torch.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)
    return reduce_loss(loss, weight, reduction, avg_factor)


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
        self._kwargs: dict = {}

    @staticmethod
    def _fn(*args, **kwargs) -> Tensor:
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


class BCEWithLogitsLoss(_WeightedLoss):
    """Module form of :func:`bce_with_logits_loss`."""

    _fn = staticmethod(bce_with_logits_loss)

    def __init__(self, reduction: str = "mean", loss_weight: float = 1.0, label_smoothing: float = 0.0,
                 pos_weight: float | None = None) -> None:
        super().__init__(reduction, loss_weight)
        _smooth(torch.zeros(()), label_smoothing)  # validates
        self._kwargs = dict(label_smoothing=label_smoothing, pos_weight=pos_weight)


class FocalLoss(_WeightedLoss):
    """Module form of :func:`sigmoid_focal_loss`."""

    _fn = staticmethod(sigmoid_focal_loss)

    def __init__(self, reduction: str = "mean", loss_weight: float = 1.0, alpha: float = 0.25,
                 gamma: float = 2.0, label_smoothing: float = 0.0) -> None:
        super().__init__(reduction, loss_weight)
        _smooth(torch.zeros(()), label_smoothing)
        self._kwargs = dict(alpha=alpha, gamma=gamma, label_smoothing=label_smoothing)


class VarifocalLoss(_WeightedLoss):
    """Module form of :func:`varifocal_loss`."""

    _fn = staticmethod(varifocal_loss)

    def __init__(self, reduction: str = "mean", loss_weight: float = 1.0, alpha: float = 0.75,
                 gamma: float = 2.0, iou_weighted: bool = True) -> None:
        super().__init__(reduction, loss_weight)
        self._kwargs = dict(alpha=alpha, gamma=gamma, iou_weighted=iou_weighted)


class QualityFocalLoss(_WeightedLoss):
    """Module form of :func:`quality_focal_loss`."""

    _fn = staticmethod(quality_focal_loss)

    def __init__(self, reduction: str = "mean", loss_weight: float = 1.0, beta: float = 2.0) -> None:
        super().__init__(reduction, loss_weight)
        self._kwargs = dict(beta=beta)


class IoULoss(_WeightedLoss):
    """Module form of :func:`iou_loss`; ``mode`` is ``iou`` | ``giou`` | ``diou`` | ``ciou``,
    ``penalty`` is ``linear`` | ``square`` (YOLOX) | ``log``."""

    _fn = staticmethod(iou_loss)
    input_space = "boxes"

    def __init__(self, mode: str = "ciou", reduction: str = "mean", loss_weight: float = 1.0,
                 penalty: str = "linear") -> None:
        super().__init__(reduction, loss_weight)
        if mode not in IOU_MODES:
            raise ValueError(f"unknown IoU mode {mode!r}; accepted: {', '.join(IOU_MODES)}")
        _check_penalty(mode, penalty)
        self._kwargs = dict(mode=mode) if penalty == "linear" else dict(mode=mode, penalty=penalty)


class DistributionFocalLoss(_WeightedLoss):
    """Module form of :func:`distribution_focal_loss` (the loss pipeline's ``loss_dfl``: bin
    logits of the positives against their :class:`~detkit.coders.DFLCoder` targets)."""

    _fn = staticmethod(distribution_focal_loss)
    input_space = "distribution"


INPUT_SPACES = ("boxes", "deltas")


class _RegressionLoss(_WeightedLoss):
    def __init__(self, reduction: str, loss_weight: float, input_space: str) -> None:
        super().__init__(reduction, loss_weight)
        if input_space not in INPUT_SPACES:
            raise ValueError(f"unknown input_space {input_space!r}; accepted: {', '.join(INPUT_SPACES)}")
        self.input_space = input_space


class L1Loss(_RegressionLoss):
    """Module form of :func:`l1_loss`. ``input_space`` tells the loss pipeline whether to apply
    it to encoded targets (``"deltas"``, YOLOX's extra L1) or to decoded boxes (``"boxes"``)."""

    _fn = staticmethod(l1_loss)

    def __init__(self, reduction: str = "mean", loss_weight: float = 1.0, input_space: str = "deltas") -> None:
        super().__init__(reduction, loss_weight, input_space)


class SmoothL1Loss(_RegressionLoss):
    """Module form of :func:`smooth_l1_loss` (``input_space`` as for :class:`L1Loss`)."""

    _fn = staticmethod(smooth_l1_loss)

    def __init__(self, reduction: str = "mean", loss_weight: float = 1.0, beta: float = 1.0,
                 input_space: str = "deltas") -> None:
        super().__init__(reduction, loss_weight, input_space)
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self._kwargs = dict(beta=beta)
