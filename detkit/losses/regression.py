"""Box regression losses: the IoU family on decoded boxes, distribution focal loss on bin logits, L1 and
smooth L1 on encoded targets or on image-normalised ltrb distances (each module says where the loss pipeline
applies it: ``input_space``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from detkit.boxes import IOU_MODES, aligned_iou
from detkit.losses.base import _check_same_shape, _WeightedLoss, reduce_loss

__all__ = [
    "DistributionFocalLoss", "INPUT_SPACES", "IOU_PENALTIES", "ImageL1Loss", "IoULoss", "L1Loss", "SmoothL1Loss",
    "distribution_focal_loss", "iou_loss", "l1_loss", "smooth_l1_loss",
]

IOU_PENALTIES = ("linear", "square", "log")
# -log(IoU) is computed on IoU clamped to at least this (mmdetection's IoULoss(mode="log") eps).
LOG_IOU_EPS = 1e-6


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


class IoULoss(_WeightedLoss):
    """Module form of :func:`iou_loss` on matching xyxy boxes ``pred (..., 4)``, ``target (..., 4)``.

    Args:
        mode: ``iou`` | ``giou`` | ``diou`` | ``ciou``.
        reduction: ``"none"``, ``"mean"`` or ``"sum"`` (``forward``'s ``reduction_override`` wins).
        loss_weight: factor on the loss.
        penalty: ``linear`` (``1 - IoU``) | ``square`` (YOLOX) | ``log`` (UnitBox); the last two for ``iou`` only.

    Raises:
        ValueError: an unknown ``mode``, ``penalty`` or ``reduction``, or a penalty the mode has not.
    """

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
    logits of the positives against their :class:`~detkit.coders.DFLCoder` targets).

    Args:
        reduction: ``"none"``, ``"mean"`` or ``"sum"`` (``forward``'s ``reduction_override`` wins).
        loss_weight: factor on the loss.
    """

    _fn = staticmethod(distribution_focal_loss)
    input_space = "distribution"


# boxes: decoded xyxy; deltas: the coder's encoded targets; image_ltrb: ltrb distances from the prior's
# centre over the input's (W, H, W, H) (the loss pipeline's ``_image_ltrb``)
INPUT_SPACES = ("boxes", "deltas", "image_ltrb")


class _RegressionLoss(_WeightedLoss):
    def __init__(self, reduction: str, loss_weight: float, input_space: str) -> None:
        super().__init__(reduction, loss_weight)
        if input_space not in INPUT_SPACES:
            raise ValueError(f"unknown input_space {input_space!r}; accepted: {', '.join(INPUT_SPACES)}")
        self.input_space = input_space


class L1Loss(_RegressionLoss):
    """Module form of :func:`l1_loss`. ``input_space`` tells the loss pipeline whether to apply
    it to encoded targets (``"deltas"``, YOLOX's extra L1), to decoded boxes (``"boxes"``) or to
    image-normalised ltrb distances (``"image_ltrb"``, :class:`ImageL1Loss`).

    Args:
        reduction: ``"none"``, ``"mean"`` or ``"sum"`` (``forward``'s ``reduction_override`` wins).
        loss_weight: factor on the loss.
        input_space: ``"deltas"``, ``"boxes"`` or ``"image_ltrb"``.

    Raises:
        ValueError: an unknown ``reduction`` or ``input_space``.
    """

    _fn = staticmethod(l1_loss)

    def __init__(self, reduction: str = "mean", loss_weight: float = 1.0, input_space: str = "deltas") -> None:
        super().__init__(reduction, loss_weight, input_space)


class ImageL1Loss(L1Loss):
    """YOLO26's DFL-free box loss (Ultralytics 8.4's ``BboxLoss`` at ``reg_max=1``, its ``l1_loss``): L1
    between the predicted and the target ltrb distances from each positive's prior centre, both in pixels
    divided by the network input's width (l, r) and height (t, b), mean over the 4 sides.

    The loss pipeline (``loss_reg=ImageL1Loss()``, returned as ``loss_reg``) hands it ``pred (P, 4)`` (the
    decoded prediction's distances, with grad) and ``target (P, 4)`` (the GT's), side weights ``(P, 4)``
    (``1/4``, or with ``box_weight="cls_target"`` the positive's target ``/ 4``) and the box losses' divisor;
    Ultralytics' gain for it is ``dfl`` (1.5): ``loss_weights=dict(reg=1.5)``.

    Args:
        reduction: ``"none"``, ``"mean"`` or ``"sum"`` (``forward``'s ``reduction_override`` wins).
        loss_weight: factor on the loss.
    """

    def __init__(self, reduction: str = "mean", loss_weight: float = 1.0) -> None:
        super().__init__(reduction, loss_weight, input_space="image_ltrb")


class SmoothL1Loss(_RegressionLoss):
    """Module form of :func:`smooth_l1_loss` (``input_space`` as for :class:`L1Loss`).

    Args:
        reduction: ``"none"``, ``"mean"`` or ``"sum"`` (``forward``'s ``reduction_override`` wins).
        loss_weight: factor on the loss.
        beta: where the quadratic part ends (0: plain L1).
        input_space: ``"deltas"`` or ``"boxes"``.

    Raises:
        ValueError: an unknown ``reduction`` or ``input_space``, a negative ``beta``.
    """

    _fn = staticmethod(smooth_l1_loss)

    def __init__(self, reduction: str = "mean", loss_weight: float = 1.0, beta: float = 1.0,
                 input_space: str = "deltas") -> None:
        super().__init__(reduction, loss_weight, input_space)
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self._kwargs = dict(beta=beta)
