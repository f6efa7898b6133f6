"""Box formats and the IoU family. Pure functions; every result is computed in fp32.

Formats: ``xyxy`` (x1, y1, x2, y2 absolute pixels, the internal format everywhere),
``cxcywh`` (centre, width, height) and ``xywh`` (top-left corner, width, height: COCO's).

One IoU family, one body: every variant (IoU, GIoU, DIoU, CIoU, and the IoF of crowd regions)
starts from :func:`inter_union` on broadcastable boxes, so its three shapes agree on the same boxes:

* pairwise ``pairwise_iou(a, b, mode)`` (alias ``box_iou``): ``a (..., N, 4)`` against
  ``b (..., M, 4)`` -> ``(..., N, M)``, 2-D or batched alike;
* aligned ``aligned_iou(a, b, mode)``: ``a (..., 4)`` with ``b (..., 4)`` row by row -> ``(...)``,
  used by the IoU losses and by the candidate-sparse assigners (one value per listed pair);
* ``pairwise_iof(a, b)``: the intersection over ``a``'s own area (a prior's share inside a crowd
  region).

Degenerate boxes (zero width or height) have defined results: IoU 0 against anything, never NaN,
and finite gradients. Every element is computed by the same correctly rounded operations wherever
it sits in a tensor, so a value computed for one pair equals the one in a full matrix bit for bit.
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
    "inter_union",
    "pairwise_iof",
    "pairwise_iou",
    "valid_gt_mask",
    "xywh_to_xyxy",
    "xyxy_to_cxcywh",
    "xyxy_to_xywh",
]

# Added to unions and enclosing-box sizes so zero-area boxes give IoU 0 instead of 0/0.
EPS = 1e-7
# Least area an IoF divides by, so a zero-area box gives IoF 0 instead of 0/0.
IOF_MIN_AREA = 1e-6

IOU_MODES = ("iou", "giou", "diou", "ciou")


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``(..., 4)`` xyxy -> ``(..., 4)`` cxcywh."""
    out: Tensor = tvops.box_convert(boxes, "xyxy", "cxcywh")
    return out


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(..., 4)`` cxcywh -> ``(..., 4)`` xyxy."""
    out: Tensor = tvops.box_convert(boxes, "cxcywh", "xyxy")
    return out


def xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """``(..., 4)`` xyxy -> ``(..., 4)`` xywh (COCO)."""
    out: Tensor = tvops.box_convert(boxes, "xyxy", "xywh")
    return out


def xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(..., 4)`` xywh (COCO) -> ``(..., 4)`` xyxy."""
    out: Tensor = tvops.box_convert(boxes, "xywh", "xyxy")
    return out


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


def inter_union(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Intersection and union areas of broadcastable fp32 boxes: ``a (..., 4)``, ``b (..., 4)``.

    Computed coordinate by coordinate (no stacked ``(..., 2)`` temporaries), inverted boxes
    counting as area 0.

    Returns:
        ``(inter, union)``, ``Tensor[...]`` each (the broadcast shape).
    """
    iw = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    ih = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0)
    inter = iw * ih
    return inter, box_area(a) + box_area(b) - inter


def _iou_terms(a: Tensor, b: Tensor, mode: str, eps: float) -> Tensor:
    """IoU family on broadcastable fp32 ``a (..., 4)`` and ``b (..., 4)`` -> ``(...)``."""
    inter, union = inter_union(a, b)
    iou = inter / (union + eps)
    if mode == "iou":
        return iou
    enc_w = (torch.maximum(a[..., 2], b[..., 2]) - torch.minimum(a[..., 0], b[..., 0])).clamp(min=0)
    enc_h = (torch.maximum(a[..., 3], b[..., 3]) - torch.minimum(a[..., 1], b[..., 1])).clamp(min=0)
    if mode == "giou":
        enc_area = enc_w * enc_h
        return iou - (enc_area - union) / (enc_area + eps)
    # DIoU / CIoU: centre distance over the enclosing box's squared diagonal.
    diag2 = enc_w.pow(2) + enc_h.pow(2) + eps
    dx = (a[..., 0] + a[..., 2]) / 2 - (b[..., 0] + b[..., 2]) / 2
    dy = (a[..., 1] + a[..., 3]) / 2 - (b[..., 1] + b[..., 3]) / 2
    rho2 = dx.pow(2) + dy.pow(2)
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
        eps: added to the union (and the enclosing box's area / diagonal) so empty boxes give 0, not NaN.

    Returns:
        ``Tensor[...]`` fp32: IoU in [0, 1]; GIoU / DIoU / CIoU in [-1, 1].

    Raises:
        ValueError: an unknown ``mode``.
    """
    _check_mode(mode)
    return _iou_terms(boxes1.float(), boxes2.float(), mode, eps)


def pairwise_iou(boxes1: Tensor, boxes2: Tensor, mode: str = "iou", eps: float = EPS) -> Tensor:
    """Pairwise IoU family, 2-D or batched, by broadcasting.

    Args:
        boxes1: ``Tensor[..., N, 4]`` xyxy.
        boxes2: ``Tensor[..., M, 4]`` xyxy; leading dims broadcast with ``boxes1``'s (so GTs
            ``(B, M, 4)`` against shared priors ``(N, 4)`` give ``(B, M, N)``).
        mode: ``iou`` | ``giou`` | ``diou`` | ``ciou``.
        eps: as in :func:`aligned_iou`.

    Returns:
        ``Tensor[..., N, M]`` fp32; element ``[..., i, j]`` equals ``aligned_iou(boxes1[..., i, :],
        boxes2[..., j, :], mode)`` bit for bit.

    Raises:
        ValueError: an unknown ``mode``.
    """
    _check_mode(mode)
    return _iou_terms(boxes1.float()[..., :, None, :], boxes2.float()[..., None, :, :], mode, eps)


box_iou = pairwise_iou  # the name torchvision users look for; same function


def pairwise_iof(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection over foreground: the share of each ``boxes1`` box's area inside each ``boxes2`` box.

    Args:
        boxes1: ``Tensor[..., N, 4]`` xyxy (e.g. priors).
        boxes2: ``Tensor[..., M, 4]`` xyxy (e.g. crowd regions); leading dims broadcast.

    Returns:
        ``Tensor[..., N, M]`` fp32 in [0, 1]: ``inter / max(area(boxes1), IOF_MIN_AREA)``, so 0 for a
        zero-area ``boxes1`` box.
    """
    a = boxes1.float()[..., :, None, :]
    inter, _ = inter_union(a, boxes2.float()[..., None, :, :])
    return inter / box_area(a).clamp(min=IOF_MIN_AREA)
