"""Building blocks shared by backbones, necks and heads.

``ConvBNAct`` is the unit everything is made of (conv -> BatchNorm -> activation, with groups,
dilation and a depthwise-separable option); ``SE`` is squeeze-and-excitation attention;
``SPP`` / ``SPPF`` are YOLOv4's / YOLOv5's spatial pyramid pooling; ``DeformConv`` wraps
``torchvision.ops.DeformConv2d`` with a zero-initialised offset branch so it starts out as the
plain convolution with the same weight.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import DeformConv2d

__all__ = [
    "freeze",
    "norm_to_eval",
    "ACTIVATIONS",
    "SPP",
    "SPPF",
    "SE",
    "ConvBNAct",
    "DeformConv",
    "DepthwiseSeparableConv",
    "Mish",
    "make_activation",
]


class Mish(nn.Module):
    """``x * tanh(softplus(x))`` (YOLOv4's backbone activation)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.mish(x)


ACTIVATIONS = ("mish", "silu", "leaky", "relu", "none")


def make_activation(name: str) -> nn.Module:
    """An activation module by name: ``mish`` | ``silu`` | ``leaky`` (slope 0.1, Darknet's) |
    ``relu`` | ``none``."""
    if name == "mish":
        return Mish()
    if name == "silu":
        return nn.SiLU(inplace=True)
    if name == "leaky":
        return nn.LeakyReLU(0.1, inplace=True)
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}; accepted: {', '.join(ACTIVATIONS)}")


class ConvBNAct(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> activation; 'same' padding for odd kernels.

    Args:
        in_channels / out_channels: channel counts.
        kernel_size, stride, dilation, groups: as for ``nn.Conv2d`` (``groups=in_channels`` is a
            depthwise conv).
        act: activation name (see :func:`make_activation`).
        bn: False gives a conv with a bias and no BatchNorm.
        padding: explicit padding (default ``dilation * (kernel_size - 1) // 2``, 'same' for odd
            kernels); YOLOv5's 6x6 stride-2 stem uses 2.

    Shapes: ``(B, in, H, W) -> (B, out, H / stride, W / stride)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        *,
        dilation: int = 1,
        groups: int = 1,
        act: str = "leaky",
        bn: bool = True,
        padding: int | None = None,
    ) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups={groups} must divide in_channels={in_channels} and "
                f"out_channels={out_channels}"
            )
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding,
            dilation=dilation, groups=groups, bias=not bn,
        )
        self.bn = nn.BatchNorm2d(out_channels) if bn else nn.Identity()
        self.act = make_activation(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class DepthwiseSeparableConv(nn.Sequential):
    """Depthwise ``k x k`` ConvBNAct followed by a pointwise 1x1 ConvBNAct (MobileNet style).

    Shapes: ``(B, in, H, W) -> (B, out, H / stride, W / stride)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        *,
        dilation: int = 1,
        act: str = "leaky",
    ) -> None:
        super().__init__(
            ConvBNAct(in_channels, in_channels, kernel_size, stride, dilation=dilation,
                      groups=in_channels, act=act),
            ConvBNAct(in_channels, out_channels, 1, act=act),
        )


def conv_unit(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 1,
    stride: int = 1,
    *,
    act: str = "leaky",
    depthwise: bool = False,
) -> nn.Module:
    """A ConvBNAct, or for ``depthwise=True`` and ``kernel_size > 1`` its separable version."""
    if depthwise and kernel_size > 1:
        return DepthwiseSeparableConv(in_channels, out_channels, kernel_size, stride, act=act)
    return ConvBNAct(in_channels, out_channels, kernel_size, stride, act=act)


class SE(nn.Module):
    """Squeeze-and-excitation: global average pool -> FC (C/r) -> ReLU -> FC (C) -> sigmoid gate.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        w = x.mean((2, 3), keepdim=True)  # (B, C, H, W) -> (B, C, 1, 1)
        w = torch.sigmoid(self.fc2(F.relu(self.fc1(w), inplace=True)))
        return x * w


class SPP(nn.Module):
    """YOLOv4 spatial pyramid pooling: stride-1 max-pools, concatenated ``[pool_k..., x]``.

    The concat order is Darknet's (``route -1,-3,-5,-6``: largest kernel first, input last), so
    weights of the following conv load from Darknet files unchanged.

    Shapes: ``(B, C, H, W) -> (B, C * (len(kernel_sizes) + 1), H, W)``.
    """

    def __init__(self, kernel_sizes: Sequence[int] = (5, 9, 13)) -> None:
        super().__init__()
        for k in kernel_sizes:
            if k % 2 == 0:
                raise ValueError(f"SPP kernel sizes must be odd, got {list(kernel_sizes)}")
        self.pools = nn.ModuleList(
            nn.MaxPool2d(k, stride=1, padding=k // 2) for k in sorted(kernel_sizes, reverse=True)
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([pool(x) for pool in self.pools] + [x], dim=1)


class SPPF(nn.Module):
    """YOLOv5's fast SPP: three chained 5x5 max-pools (equal to 5/9/13 pools), ``[x, p1, p2, p3]``.

    Shapes: ``(B, C, H, W) -> (B, 4C, H, W)``.
    """

    def __init__(self, kernel_size: int = 5) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(kernel_size, stride=1, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        p1 = self.pool(x)
        p2 = self.pool(p1)
        return torch.cat([x, p1, p2, self.pool(p2)], dim=1)


class DeformConv(DeformConv2d):
    """Deformable conv v1 (``torchvision.ops.DeformConv2d``) with its own offset branch.

    ``conv_offset`` predicts ``2 * k * k`` offsets per location and is zero-initialised, so the
    layer starts out exactly as ``nn.Conv2d`` with the same weight. The parameter ``weight``
    keeps the plain conv's name, so ImageNet checkpoints load into it.

    Shapes: ``(B, in, H, W) -> (B, out, H / stride, W / stride)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        dilation: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         bias=bias)
        self.conv_offset = nn.Conv2d(
            in_channels, 2 * kernel_size * kernel_size, kernel_size, stride, padding,
            dilation=dilation, bias=True,
        )
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(x, self.conv_offset(x))


def freeze(modules: Iterable[nn.Module]) -> None:
    """Put ``modules`` in eval mode and stop their gradients (frozen backbone stages)."""
    for module in modules:
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)


def norm_to_eval(module: nn.Module) -> None:
    """Every BatchNorm below ``module`` in eval mode, keeping its (pretrained) statistics."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
