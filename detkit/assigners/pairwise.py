"""Pairwise IoU laid out GT-major, ``(B, M, N)``, with few full-size temporaries.

Assignment evaluates IoU on ``B x M x N`` pairs (16 x 50 x 25,200 = 20M for a 640 batch), where
``boxes.pairwise_iou``'s ``(..., 2)``-stacked intermediates cost several times the output. This
computes the same formula (``inter / (union + EPS)``, degenerate boxes give 0) coordinate by
coordinate, in place where it can.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detkit.boxes import EPS

__all__ = ["exact_log", "exact_pow", "gt_prior_iou"]

MAX_INT_POWER = 64  # integer exponents up to this are computed by repeated multiplication


def gt_prior_iou(gt_boxes: Tensor, boxes: Tensor) -> Tensor:
    """IoU of each GT with each prior (or predicted box).

    Args:
        gt_boxes: ``Tensor[B, M, 4]`` xyxy fp32.
        boxes: ``Tensor[N, 4]`` (shared) or ``Tensor[B, N, 4]`` xyxy fp32.

    Returns:
        ``Tensor[B, M, N]`` fp32 IoU in [0, 1].
    """
    if boxes.dim() == 2:
        boxes = boxes[None]  # (N, 4) -> (1, N, 4)
    g = gt_boxes[:, :, None, :]  # (B, M, 4) -> (B, M, 1, 4)
    p = boxes[:, None, :, :]  # (B, N, 4) -> (B, 1, N, 4)
    iw = torch.minimum(g[..., 2], p[..., 2]).sub_(torch.maximum(g[..., 0], p[..., 0])).clamp_(min=0)
    ih = torch.minimum(g[..., 3], p[..., 3]).sub_(torch.maximum(g[..., 1], p[..., 1])).clamp_(min=0)
    inter = iw.mul_(ih)  # (B, M, N)
    area_g = (g[..., 2] - g[..., 0]).clamp(min=0) * (g[..., 3] - g[..., 1]).clamp(min=0)  # (B, M, 1)
    area_p = (p[..., 2] - p[..., 0]).clamp(min=0) * (p[..., 3] - p[..., 1]).clamp(min=0)  # (B, 1, N)
    union = (area_g + area_p).sub_(inter).add_(EPS)  # (B, M, N)
    return inter.div_(union)


# Transcendental functions (log, pow) are computed by SIMD code on most elements and scalar code
# on loop tails, whose last bits can differ; where a tail falls depends on the tensor's size and
# the thread split, so chunking GTs could change a result in the last bit. The two helpers below
# are used on every per-pair tensor instead: +, -, *, / are correctly rounded on both paths.


def exact_pow(x: Tensor, exponent: float) -> Tensor:
    """``x ** exponent`` (fp32) independent of tensor size and threads.

    Integer exponents in ``[0, MAX_INT_POWER]`` use exponentiation by squaring (exact IEEE products);
    others go through fp64 and round to fp32 (equal except within 1 fp64 ulp of a rounding tie).
    """
    if float(exponent).is_integer() and 0 <= exponent <= MAX_INT_POWER:
        e = int(exponent)
        result = torch.ones_like(x)
        base = x
        while e:
            if e & 1:
                result = result * base
            e >>= 1
            if e:
                base = base * base
        return result
    return x.double().pow(exponent).float()


def exact_log(x: Tensor) -> Tensor:
    """``log(x)`` (fp32) computed in fp64 and rounded, so independent of tensor size and threads."""
    return x.double().log().float()
