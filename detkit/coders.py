"""Box coders: raw regression outputs <-> ``xyxy`` boxes, relative to priors.

Every coder has the same two calls (priors are shared by the batch):

* ``encode(priors (N, 4), gt (..., N, 4), strides (N,)) -> (..., N, 4)`` regression targets;
* ``decode(priors (N, 4), deltas (..., N, 4), strides (N,)) -> (..., N, 4)`` xyxy boxes.

Both compute in at least fp32 (half-precision inputs are promoted, fp64 stays fp64), so AMP
training decodes boxes at full precision. Exponents are clamped with named constants (see
each constant's comment) so an untrained head cannot overflow to ``inf``.

``encode`` is the inverse of ``decode`` on every target the decoder can represent: targets
outside that range (a YOLO centre outside its cell's reach, a size the sigmoid cannot express)
are clamped to the nearest representable value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor

from detkit.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh

__all__ = ["BoxCoder", "DeltaXYWHCoder", "DistanceCoder", "YOLOCoder"]

# Raw size outputs are clamped to this before exp(): an untrained head can emit large logits,
# and exp(88) overflows fp32. log(1000/16) (detectron2's choice) lets a box grow to 62.5x its
# prior, far beyond any real object, while exp() stays finite and well-conditioned.
MAX_LOG_SCALE = math.log(1000.0 / 16)

# Log distances (DistanceCoder with log_scale) are clamped to this before exp(): 1e4 pixels or
# strides is beyond any input size, and exp() of a wild untrained output stays finite.
MAX_LOG_DISTANCE = math.log(1e4)

# Sigmoid targets are clamped into [LOGIT_EPS, 1 - LOGIT_EPS] before the inverse sigmoid, so a
# target exactly on the reachable range's edge gives a finite logit (about +-13.8) not +-inf.
LOGIT_EPS = 1e-6

# Widths/heights are clamped to at least this many pixels before log(), so a degenerate
# (zero-size) target box gives a finite regression target.
MIN_SIZE = 1e-6

YOLO_SIZE_MODES = ("exp", "sigmoid_square")


class BoxCoder(Protocol):
    """What a head and the loss pipeline need from a coder."""

    def encode(self, priors: Tensor, gt: Tensor, strides: Tensor) -> Tensor: ...

    def decode(self, priors: Tensor, deltas: Tensor, strides: Tensor) -> Tensor: ...


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    """fp32, or fp64 when any input is fp64."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype) if t.is_floating_point() else dtype
    return dtype


def _check_last_dim(name: str, t: Tensor) -> None:
    if t.shape[-1] != 4:
        raise ValueError(f"{name} must have shape (..., 4), got {tuple(t.shape)}")


def _logit(p: Tensor) -> Tensor:
    p = p.clamp(LOGIT_EPS, 1 - LOGIT_EPS)
    return torch.log(p) - torch.log1p(-p)


class YOLOCoder:
    """YOLOv3/v4/v5 coder: sigmoid offsets within the cell, sizes relative to the anchor.

    Decoding (``t`` the raw output, ``s = scale_x_y``, ``g`` the prior's cell index recovered
    from its centre as ``(cx - stride / 2) / stride``)::

        centre = (sigmoid(t_xy) * s - (s - 1) / 2 + g) * stride
        size   = exp(t_wh) * anchor_wh                  size_mode="exp"            (YOLOv3/v4)
        size   = (2 * sigmoid(t_wh)) ** 2 * anchor_wh   size_mode="sigmoid_square" (YOLOv5)

    The centre can reach ``(s - 1) / 2`` cells beyond its own cell on either side (YOLOv4 uses
    ``s = 1.05..1.2``, YOLOv5 ``s = 2``); ``sigmoid_square`` sizes lie in ``(0, 4)`` anchors.

    Args:
        scale_x_y: grid sensitivity factor ``s >= 1``.
        size_mode: ``"exp"`` or ``"sigmoid_square"``.
    """

    def __init__(self, scale_x_y: float = 1.0, size_mode: str = "exp") -> None:
        if not scale_x_y >= 1.0:
            raise ValueError(f"scale_x_y must be >= 1 (1 = plain YOLOv3), got {scale_x_y}")
        if size_mode not in YOLO_SIZE_MODES:
            raise ValueError(f"unknown size_mode {size_mode!r}; accepted: {', '.join(YOLO_SIZE_MODES)}")
        self.scale_x_y = float(scale_x_y)
        self.size_mode = size_mode

    def _prior_terms(self, priors: Tensor, strides: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """Cell index ``(N, 2)``, anchor size ``(N, 2)`` and stride ``(N, 1)``."""
        p = xyxy_to_cxcywh(priors.to(dtype))
        stride = strides.to(dtype)[:, None]  # (N,) -> (N, 1)
        cell = (p[:, :2] - stride / 2) / stride
        return cell, p[:, 2:], stride

    def decode(self, priors: Tensor, deltas: Tensor, strides: Tensor) -> Tensor:
        """Raw outputs to boxes.

        Args:
            priors: ``Tensor[N, 4]`` xyxy anchors.
            deltas: ``Tensor[..., N, 4]`` raw ``(tx, ty, tw, th)``.
            strides: ``Tensor[N]`` stride of each prior.

        Returns:
            ``Tensor[..., N, 4]`` xyxy, fp32 (fp64 for fp64 inputs).
        """
        _check_last_dim("deltas", deltas)
        dtype = _compute_dtype(priors, deltas)
        cell, anchor_wh, stride = self._prior_terms(priors, strides, dtype)
        t = deltas.to(dtype)
        s = self.scale_x_y
        centre = (torch.sigmoid(t[..., :2]) * s - (s - 1) / 2 + cell) * stride
        if self.size_mode == "exp":
            wh = torch.exp(t[..., 2:].clamp(max=MAX_LOG_SCALE)) * anchor_wh
        else:
            wh = (2 * torch.sigmoid(t[..., 2:])).pow(2) * anchor_wh
        return cxcywh_to_xyxy(torch.cat([centre, wh], dim=-1))

    def encode(self, priors: Tensor, gt: Tensor, strides: Tensor) -> Tensor:
        """Boxes to the raw outputs that decode to them (clamped to the reachable range).

        Args:
            priors: ``Tensor[N, 4]`` xyxy anchors.
            gt: ``Tensor[..., N, 4]`` xyxy target boxes, one per prior.
            strides: ``Tensor[N]``.

        Returns:
            ``Tensor[..., N, 4]`` logits ``(tx, ty, tw, th)``.
        """
        _check_last_dim("gt", gt)
        dtype = _compute_dtype(priors, gt)
        cell, anchor_wh, stride = self._prior_terms(priors, strides, dtype)
        g = xyxy_to_cxcywh(gt.to(dtype))
        s = self.scale_x_y
        offset = (g[..., :2] / stride - cell + (s - 1) / 2) / s
        t_xy = _logit(offset)
        ratio = g[..., 2:].clamp(min=MIN_SIZE) / anchor_wh
        if self.size_mode == "exp":
            t_wh = torch.log(ratio)
        else:
            t_wh = _logit(ratio.sqrt() / 2)
        return torch.cat([t_xy, t_wh], dim=-1)

    def __repr__(self) -> str:
        return f"YOLOCoder(scale_x_y={self.scale_x_y}, size_mode={self.size_mode!r})"


class DeltaXYWHCoder:
    """Faster R-CNN coder: centre shift in prior sizes, log size ratio, normalised by means/stds.

    ``d = ((gx - px) / pw, (gy - py) / ph, log(gw / pw), log(gh / ph))``, then
    ``(d - means) / stds``. Strides are accepted for the common interface and not used.

    Args:
        means: per-coordinate mean subtracted from the deltas.
        stds: per-coordinate std the deltas are divided by (Faster R-CNN's RPN: all 1;
            its R-CNN stage: ``(0.1, 0.1, 0.2, 0.2)``).
        clamp: largest ``dw``/``dh`` accepted before exp() when decoding.
    """

    def __init__(
        self,
        means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
        stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        clamp: float = MAX_LOG_SCALE,
    ) -> None:
        if len(means) != 4 or len(stds) != 4 or any(s <= 0 for s in stds):
            raise ValueError(f"means and stds must be 4 numbers each, stds positive; got {means}, {stds}")
        self.means = tuple(float(m) for m in means)
        self.stds = tuple(float(s) for s in stds)
        self.clamp = float(clamp)

    def encode(self, priors: Tensor, gt: Tensor, strides: Tensor | None = None) -> Tensor:
        """``priors (N, 4)``, ``gt (..., N, 4)`` xyxy -> ``(..., N, 4)`` normalised deltas."""
        _check_last_dim("gt", gt)
        dtype = _compute_dtype(priors, gt)
        p, g = xyxy_to_cxcywh(priors.to(dtype)), xyxy_to_cxcywh(gt.to(dtype))
        pwh = p[:, 2:].clamp(min=MIN_SIZE)
        d = torch.cat([(g[..., :2] - p[:, :2]) / pwh, torch.log(g[..., 2:].clamp(min=MIN_SIZE) / pwh)], dim=-1)
        return (d - d.new_tensor(self.means)) / d.new_tensor(self.stds)

    def decode(self, priors: Tensor, deltas: Tensor, strides: Tensor | None = None) -> Tensor:
        """``priors (N, 4)``, ``deltas (..., N, 4)`` -> ``(..., N, 4)`` xyxy (fp32 at least)."""
        _check_last_dim("deltas", deltas)
        dtype = _compute_dtype(priors, deltas)
        p = xyxy_to_cxcywh(priors.to(dtype))
        d = deltas.to(dtype) * deltas.new_tensor(self.stds, dtype=dtype) + deltas.new_tensor(self.means, dtype=dtype)
        centre = p[:, :2] + d[..., :2] * p[:, 2:]
        wh = p[:, 2:] * torch.exp(d[..., 2:].clamp(max=self.clamp))
        return cxcywh_to_xyxy(torch.cat([centre, wh], dim=-1))

    def __repr__(self) -> str:
        return f"DeltaXYWHCoder(means={self.means}, stds={self.stds}, clamp={self.clamp:.4g})"


class DistanceCoder:
    """Anchor-free coder: distances from the prior's centre to the box's four sides (FCOS, GFL).

    ``(l, t, r, b) = (cx - x1, cy - y1, x2 - cx, y2 - cy)``, divided by the prior's stride when
    ``normalize`` is set. With ``log_scale`` the regression values are ``log`` distances and
    decoding applies ``exp`` (clamped), so a raw head output always decodes to a valid box.

    Args:
        normalize: measure distances in strides instead of pixels.
        log_scale: regress log distances (decode applies exp).
        max_distance: when given, encoded distances (after normalisation, before log) are
            clamped into ``[0, max_distance]`` (GFL's ``reg_max``); otherwise only log_scale
            clamps them (to at least ``MIN_SIZE``).
    """

    def __init__(self, normalize: bool = True, log_scale: bool = False, max_distance: float | None = None) -> None:
        if max_distance is not None and not max_distance > 0:
            raise ValueError(f"max_distance must be positive or None, got {max_distance}")
        self.normalize = normalize
        self.log_scale = log_scale
        self.max_distance = max_distance

    def _scale(self, strides: Tensor, dtype: torch.dtype) -> Tensor:
        if not self.normalize:
            return torch.ones(1, 1, dtype=dtype, device=strides.device)
        return strides.to(dtype)[:, None]  # (N,) -> (N, 1)

    def encode(self, priors: Tensor, gt: Tensor, strides: Tensor) -> Tensor:
        """``priors (N, 4)``, ``gt (..., N, 4)`` xyxy -> ``(..., N, 4)`` ltrb distances."""
        _check_last_dim("gt", gt)
        dtype = _compute_dtype(priors, gt)
        centre = xyxy_to_cxcywh(priors.to(dtype))[:, :2]
        g = gt.to(dtype)
        d = torch.cat([centre - g[..., :2], g[..., 2:] - centre], dim=-1) / self._scale(strides, dtype)
        if self.max_distance is not None:
            d = d.clamp(0, self.max_distance)
        if self.log_scale:
            d = torch.log(d.clamp(min=MIN_SIZE))
        return d

    def decode(self, priors: Tensor, deltas: Tensor, strides: Tensor) -> Tensor:
        """``priors (N, 4)``, ``deltas (..., N, 4)`` ltrb -> ``(..., N, 4)`` xyxy (fp32 at least)."""
        _check_last_dim("deltas", deltas)
        dtype = _compute_dtype(priors, deltas)
        centre = xyxy_to_cxcywh(priors.to(dtype))[:, :2]
        d = deltas.to(dtype)
        if self.log_scale:
            d = torch.exp(d.clamp(max=MAX_LOG_DISTANCE))
        d = d * self._scale(strides, dtype)
        return torch.cat([centre - d[..., :2], centre + d[..., 2:]], dim=-1)

    def __repr__(self) -> str:
        return (
            f"DistanceCoder(normalize={self.normalize}, log_scale={self.log_scale}, "
            f"max_distance={self.max_distance})"
        )
