"""Box formats and the IoU family. Pure functions; every result is computed in fp32.

Formats: ``xyxy`` (x1, y1, x2, y2 absolute pixels, the internal format everywhere),
``cxcywh`` (centre, width, height) and ``xywh`` (top-left corner, width, height: COCO's).

IoU functions come in two shapes:

* pairwise ``box_iou(a, b)``: ``a (..., N, 4)`` against ``b (..., M, 4)`` -> ``(..., N, M)``;
  2-D inputs go through ``torchvision.ops`` (box_iou / generalized_box_iou / distance_box_iou /
  complete_box_iou), batched inputs broadcast over the leading dims;
* aligned ``aligned_iou(a, b, mode)``: ``a (..., 4)`` with ``b (..., 4)`` row by row -> ``(...)``,
  used by the IoU losses.

Degenerate boxes (zero width or height) have defined results: IoU 0 against anything, never NaN,
and finite gradients.
"""

from __future__ import annotations

import math

import torch
import torchvision.ops as tvops
from torch import Tensor

__all__ = [
    "EPS",
    "aligned_iou",
    "box_area",
    "box_iou",
    "cxcywh_to_xyxy",
    "pairwise_iou",
    "valid_gt_mask",
    "xywh_to_xyxy",
    "xyxy_to_cxcywh",
    "xyxy_to_xywh",
]

# Added to unions and enclosing-box sizes so zero-area boxes give IoU 0 instead of 0/0.
EPS = 1e-7

IOU_MODES = ("iou", "giou", "diou", "ciou")


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``(..., 4)`` xyxy -> ``(..., 4)`` cxcywh."""
    return tvops.box_convert(boxes, "xyxy", "cxcywh")


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(..., 4)`` cxcywh -> ``(..., 4)`` xyxy."""
    return tvops.box_convert(boxes, "cxcywh", "xyxy")


def xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """``(..., 4)`` xyxy -> ``(..., 4)`` xywh (COCO)."""
    return tvops.box_convert(boxes, "xyxy", "xywh")


def xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(..., 4)`` xywh (COCO) -> ``(..., 4)`` xyxy."""
    return tvops.box_convert(boxes, "xywh", "xyxy")


def box_area(boxes: Tensor) -> Tensor:
    """``(..., 4)`` xyxy -> ``(...)`` area in fp32; inverted boxes count as 0."""
    b = boxes.float()
    return (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)


def valid_gt_mask(gt_boxes: Tensor, gt_mask: Tensor) -> Tensor:
    """GT rows that take part in assignment: ``(B, M, 4)``, ``(B, M)`` bool -> ``(B, M)`` bool.

    A row counts when it is not padding (``gt_mask``), every coordinate is finite, and its width
    and height are positive. Assigners, the loss statistics and the assignment analysis all use
    this one rule.
    """
    b = gt_boxes.float()
    return gt_mask.bool() & (b[..., 2] > b[..., 0]) & (b[..., 3] > b[..., 1]) & b.isfinite().all(-1)


def _check_mode(mode: str) -> None:
    if mode not in IOU_MODES:
        raise ValueError(f"unknown IoU mode {mode!r}; accepted: {', '.join(IOU_MODES)}")


def _iou_terms(a: Tensor, b: Tensor, mode: str, eps: float) -> Tensor:
    """IoU family on broadcastable fp32 ``a (..., 4)`` and ``b (..., 4)`` -> ``(...)``."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = box_area(a) + box_area(b) - inter
    iou = inter / (union + eps)
    if mode == "iou":
        return iou
    enc_lt = torch.minimum(a[..., :2], b[..., :2])
    enc_rb = torch.maximum(a[..., 2:], b[..., 2:])
    enc_wh = (enc_rb - enc_lt).clamp(min=0)
    if mode == "giou":
        enc_area = enc_wh.prod(-1)
        return iou - (enc_area - union) / (enc_area + eps)
    # DIoU / CIoU: centre distance over the enclosing box's squared diagonal.
    diag2 = enc_wh.pow(2).sum(-1) + eps
    centre_a = (a[..., :2] + a[..., 2:]) / 2
    centre_b = (b[..., :2] + b[..., 2:]) / 2
    rho2 = (centre_a - centre_b).pow(2).sum(-1)
    # rho2 <= diag2 for well-formed boxes (both centres lie in the enclosing box); the clamp keeps
    # inverted boxes (whose enclosing box can be empty) at a penalty of 1 instead of rho2 / eps.
    diou = iou - (rho2 / diag2).clamp(max=1.0)
    if mode == "diou":
        return diou
    wa, ha = (a[..., 2] - a[..., 0]).clamp(min=0), (a[..., 3] - a[..., 1]).clamp(min=0)
    wb, hb = (b[..., 2] - b[..., 0]).clamp(min=0), (b[..., 3] - b[..., 1]).clamp(min=0)
    v = (4 / math.pi**2) * (torch.atan(wb / (hb + eps)) - torch.atan(wa / (ha + eps))).pow(2)
    with torch.no_grad():  # alpha is a weight, not differentiated (CIoU paper, eq. 11)
        alpha = v / (1 - iou + v + eps)
    return diou - alpha * v


def aligned_iou(boxes1: Tensor, boxes2: Tensor, mode: str = "iou", eps: float = EPS) -> Tensor:
    """IoU family between matching rows.

    Args:
        boxes1: ``Tensor[..., 4]`` xyxy.
        boxes2: ``Tensor[..., 4]`` xyxy, same (or broadcastable) shape.
        mode: ``iou`` | ``giou`` | ``diou`` | ``ciou``.

    Returns:
        ``Tensor[...]`` fp32: IoU in [0, 1]; GIoU / DIoU / CIoU in [-1, 1].
    """
    _check_mode(mode)
    return _iou_terms(boxes1.float(), boxes2.float(), mode, eps)


def pairwise_iou(boxes1: Tensor, boxes2: Tensor, mode: str = "iou", eps: float = EPS) -> Tensor:
    """Batched pairwise IoU family by broadcasting.

    Args:
        boxes1: ``Tensor[..., N, 4]`` xyxy.
        boxes2: ``Tensor[..., M, 4]`` xyxy; leading dims broadcast with ``boxes1``'s.

    Returns:
        ``Tensor[..., N, M]`` fp32.
    """
    _check_mode(mode)
    return _iou_terms(boxes1.float()[..., :, None, :], boxes2.float()[..., None, :, :], mode, eps)


_TV_PAIRWISE = {
    "iou": tvops.box_iou,
    "giou": tvops.generalized_box_iou,
    "diou": tvops.distance_box_iou,
    "ciou": tvops.complete_box_iou,
}


def box_iou(boxes1: Tensor, boxes2: Tensor, mode: str = "iou") -> Tensor:
    """Pairwise IoU family.

    Args:
        boxes1: ``Tensor[N, 4]`` or ``Tensor[B, N, 4]`` xyxy.
        boxes2: ``Tensor[M, 4]`` or ``Tensor[B, M, 4]`` xyxy.

    Returns:
        ``Tensor[N, M]`` (or ``Tensor[B, N, M]``) fp32. 2-D inputs use ``torchvision.ops``;
        NaNs that torchvision gives for pairs of zero-area boxes (0/0) are returned as 0.
    """
    _check_mode(mode)
    if boxes1.dim() == 2 and boxes2.dim() == 2:
        out = _TV_PAIRWISE[mode](boxes1.float(), boxes2.float())
        return torch.nan_to_num(out, nan=0.0)
    return pairwise_iou(boxes1, boxes2, mode)
