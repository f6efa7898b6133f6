"""Box coders: raw regression outputs <-> ``xyxy`` boxes, relative to priors.

Every coder has the same two calls (priors are shared by the batch):

* ``encode(priors (N, 4), gt (..., N, 4), strides (N,)) -> (..., N, 4)`` regression targets;
* ``decode(priors (N, 4), deltas (..., N, 4), strides (N,)) -> (..., N, 4)`` xyxy boxes.

The distance coders (:class:`DistanceCoder`, :class:`DFLCoder`) also decode channel-first maps,
``decode_channels(priors (N, 4), deltas (B, R, N), strides (N,)) -> (B, 4, N)``: the same values
with the parameters on dim 1, the layout of a head's raw maps, so an exported graph decodes
without transposing them (:meth:`detkit.models.heads.dense_head.DenseHead.decode_channels`).

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

__all__ = ["BoxCoder", "DFLCoder", "DeltaXYWHCoder", "DistanceCoder", "YOLOCoder", "YOLOXCoder"]

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
    """What a head and the loss pipeline need from a coder.

    ``num_params`` is R, the raw box parameters per prior the head predicts (4 for every coder
    but :class:`DFLCoder`, which takes ``4 * reg_max`` bin logits); ``encode`` always returns 4
    values per prior.
    """

    num_params: int

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


def _check_channels(name: str, t: Tensor, params: int) -> None:
    if t.dim() != 3 or t.shape[1] != params:
        raise ValueError(f"{name} must have shape (B, {params}, N) (channel-first), got {tuple(t.shape)}")


def _ltrb_channels_to_xyxy(priors: Tensor, d: Tensor) -> Tensor:
    """``priors (N, 4)``, scaled ltrb distances ``d (B, 4, N)`` -> ``(B, 4, N)`` xyxy around the priors' centres."""
    dtype = _compute_dtype(priors, d)
    centre = xyxy_to_cxcywh(priors.to(dtype))[:, :2].T  # (N, 2) -> (2, N)
    d = d.to(dtype)
    return torch.cat([centre - d[:, :2], centre + d[:, 2:]], dim=1)


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

    num_params = 4

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

    num_params = 4

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

    num_params = 4

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

    def decode_channels(self, priors: Tensor, deltas: Tensor, strides: Tensor) -> Tensor:
        """``priors (N, 4)``, channel-first ``deltas (B, 4, N)`` ltrb -> ``(B, 4, N)`` xyxy (fp32 at least):
        :meth:`decode` with the sides on dim 1."""
        _check_channels("deltas", deltas, 4)
        d = deltas.to(_compute_dtype(priors, deltas))
        if self.log_scale:
            d = torch.exp(d.clamp(max=MAX_LOG_DISTANCE))
        if self.normalize:
            d = d * strides.to(d.dtype)  # (N,) broadcasts over the last dim
        return _ltrb_channels_to_xyxy(priors, d)

    def __repr__(self) -> str:
        return (
            f"DistanceCoder(normalize={self.normalize}, log_scale={self.log_scale}, "
            f"max_distance={self.max_distance})"
        )


# DFL targets are clamped this far below the last bin so a distance always falls between two bins
# (bin floor(d) and floor(d) + 1 <= reg_max - 1), as YOLOv8 does.
DFL_EDGE_EPS = 0.01


class DFLCoder:
    """Distribution Focal Loss coder (GFL, YOLOv8): each side's distance as a distribution over bins.

    The head predicts ``4 * reg_max`` logits per prior, grouped by side (``l`` bins, then ``t``,
    ``r``, ``b``). Decoding takes the softmax over each side's bins and its expectation
    ``sum_k k * p_k`` (the integral), a distance in strides from the prior's centre, then
    ``(cx - l * s, cy - t * s, cx + r * s, cy + b * s)``. Encoding gives the target distances in
    strides, clamped into ``[0, reg_max - 1 - DFL_EDGE_EPS]`` (what the bins can express); the DFL
    loss compares them with the bin logits, the box losses with the decoded boxes.

    Args:
        reg_max: bins per side (YOLOv8: 16, distances 0..15 strides).
    """

    def __init__(self, reg_max: int = 16) -> None:
        if not isinstance(reg_max, int) or reg_max < 2:
            raise ValueError(f"reg_max must be an int >= 2 (bins per side), got {reg_max!r}")
        self.reg_max = reg_max
        self.num_params = 4 * reg_max

    def distances(self, deltas: Tensor) -> Tensor:
        """Bin logits ``(..., 4 * reg_max)`` -> expected distances ``(..., 4)`` in strides (fp32+)."""
        if deltas.shape[-1] != self.num_params:
            raise ValueError(f"deltas must have shape (..., {self.num_params}) = (..., 4 * reg_max), "
                             f"got {tuple(deltas.shape)}")
        dtype = _compute_dtype(deltas)
        bins = torch.unflatten(deltas.to(dtype), -1, (4, self.reg_max))  # (..., 4*reg_max) -> (..., 4, reg_max)
        proj = torch.arange(self.reg_max, dtype=dtype, device=deltas.device)
        return bins.softmax(dim=-1) @ proj  # (..., 4, reg_max) @ (reg_max,) -> (..., 4)

    def decode(self, priors: Tensor, deltas: Tensor, strides: Tensor) -> Tensor:
        """``priors (N, 4)``, ``deltas (..., N, 4 * reg_max)`` -> ``(..., N, 4)`` xyxy (fp32 at least)."""
        d = self.distances(deltas)
        dtype = _compute_dtype(priors, d)
        centre = xyxy_to_cxcywh(priors.to(dtype))[:, :2]
        d = d.to(dtype) * strides.to(dtype)[:, None]  # (N,) -> (N, 1)
        return torch.cat([centre - d[..., :2], centre + d[..., 2:]], dim=-1)

    def decode_channels(self, priors: Tensor, deltas: Tensor, strides: Tensor) -> Tensor:
        """``priors (N, 4)``, channel-first bin logits ``deltas (B, 4 * reg_max, N)`` -> ``(B, 4, N)`` xyxy
        (fp32 at least): :meth:`decode` with the sides on dim 1. The softmax runs over an outer axis of
        ``(B, 4, reg_max, N)`` and the expectation is a weighted sum over it, which an exported graph
        computes without a transpose (the values equal :meth:`decode`'s within fp32 rounding)."""
        _check_channels("deltas", deltas, self.num_params)
        dtype = _compute_dtype(priors, deltas)
        bins = torch.unflatten(deltas.to(dtype), 1, (4, self.reg_max))  # (B, 4 * reg_max, N) -> (B, 4, reg_max, N)
        proj = torch.arange(self.reg_max, dtype=dtype, device=deltas.device)[:, None]  # (reg_max, 1)
        d = (bins.softmax(dim=2) * proj).sum(dim=2)  # (B, 4, N) distances in strides
        return _ltrb_channels_to_xyxy(priors, d * strides.to(dtype))

    def encode(self, priors: Tensor, gt: Tensor, strides: Tensor) -> Tensor:
        """``priors (N, 4)``, ``gt (..., N, 4)`` xyxy -> ``(..., N, 4)`` ltrb distances in strides,
        clamped to the bins' range."""
        _check_last_dim("gt", gt)
        dtype = _compute_dtype(priors, gt)
        centre = xyxy_to_cxcywh(priors.to(dtype))[:, :2]
        g = gt.to(dtype)
        d = torch.cat([centre - g[..., :2], g[..., 2:] - centre], dim=-1) / strides.to(dtype)[:, None]
        return d.clamp(0, self.reg_max - 1 - DFL_EDGE_EPS)

    def __repr__(self) -> str:
        return f"DFLCoder(reg_max={self.reg_max})"


class YOLOXCoder:
    """YOLOX's coder: a linear centre offset from the cell's corner and a log size, in strides.

    ``centre = (t_xy + g) * stride``, ``size = exp(t_wh) * stride``, with ``g`` the prior's cell
    index ``(cx - stride / 2) / stride`` (YOLOX adds the raw offset to the grid index, so an
    all-zero output decodes to a one-stride box on the cell's top-left corner). Unlike distance
    coders it can express a box that does not contain the prior's centre, which SimOTA's centre
    region allows. Raw sizes are clamped to ``MAX_LOG_SCALE`` before ``exp``.
    """

    num_params = 4

    def decode(self, priors: Tensor, deltas: Tensor, strides: Tensor) -> Tensor:
        """``priors (N, 4)``, ``deltas (..., N, 4)`` -> ``(..., N, 4)`` xyxy (fp32 at least)."""
        _check_last_dim("deltas", deltas)
        dtype = _compute_dtype(priors, deltas)
        stride = strides.to(dtype)[:, None]  # (N,) -> (N, 1)
        cell = (xyxy_to_cxcywh(priors.to(dtype))[:, :2] - stride / 2) / stride
        t = deltas.to(dtype)
        centre = (t[..., :2] + cell) * stride
        wh = torch.exp(t[..., 2:].clamp(max=MAX_LOG_SCALE)) * stride
        return cxcywh_to_xyxy(torch.cat([centre, wh], dim=-1))

    def encode(self, priors: Tensor, gt: Tensor, strides: Tensor) -> Tensor:
        """``priors (N, 4)``, ``gt (..., N, 4)`` xyxy -> ``(..., N, 4)`` raw ``(t_x, t_y, t_w, t_h)``
        (YOLOX's L1 targets)."""
        _check_last_dim("gt", gt)
        dtype = _compute_dtype(priors, gt)
        stride = strides.to(dtype)[:, None]
        cell = (xyxy_to_cxcywh(priors.to(dtype))[:, :2] - stride / 2) / stride
        g = xyxy_to_cxcywh(gt.to(dtype))
        return torch.cat([g[..., :2] / stride - cell, torch.log(g[..., 2:].clamp(min=MIN_SIZE) / stride)], dim=-1)

    def __repr__(self) -> str:
        return "YOLOXCoder()"
