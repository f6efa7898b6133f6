"""Building blocks shared by backbones, necks and heads.

``ConvBNAct`` is the unit everything is made of (conv -> BatchNorm -> activation, with groups,
dilation and a depthwise-separable option); ``SE`` is squeeze-and-excitation attention;
``SPP`` / ``SPPF`` are YOLOv4's / YOLOv5's spatial pyramid pooling; ``DeformConv`` wraps
``torchvision.ops.DeformConv2d`` with a zero-initialised offset branch so it starts out as the
plain convolution with the same weight.

CSP building blocks of the YOLOv5 / YOLOX / YOLOv8 / YOLO11 families: ``DarknetBottleneck`` (two
convs, optional shortcut), ``C3`` (YOLOv5's C3 = YOLOX's CSPLayer), ``C3k`` (C3 with 3x3
bottlenecks: YOLO11's inner block), ``C2f`` (YOLOv8), ``SPPFBlock`` (1x1 conv, SPPF, 1x1 conv:
YOLOv5/v8/11's SPPF = YOLOX's SPPBottleneck; YOLO26's variant with a shortcut and no activation
after the first conv) and ``Focus`` (YOLOX's space-to-depth stem). Their submodule order is the
order of their originals' parameters. YOLO11's ``C3k2`` (a C2f whose inner blocks are bottlenecks,
C3k blocks or bottleneck + attention) is in :mod:`detkit.models.c3k2`, the attention blocks in
:mod:`detkit.models.attention`.
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
    "set_batchnorm",
    "ACTIVATIONS",
    "C2f",
    "C3",
    "C3k",
    "SPP",
    "SPPF",
    "SPPFBlock",
    "SE",
    "ConvBNAct",
    "DarknetBottleneck",
    "Focus",
    "DeformConv",
    "DepthwiseSeparableConv",
    "Mish",
    "SiLU",
    "make_activation",
]


class Mish(nn.Module):
    """``x * tanh(softplus(x))`` (YOLOv4's backbone activation)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.mish(x)


class SiLU(nn.SiLU):
    """``nn.SiLU`` that, with ``inplace=True``, works in place only where that is free: when autograd does
    not record the call (eval under ``no_grad`` / ``inference_mode``, frozen parts). Recorded, an in-place
    SiLU makes autograd copy its input for the backward on every call (``clone`` + ``copy_``: YOLOv8n's
    training forward ran about 4 % slower than out of place), so there it runs out of place.
    Same outputs either way."""

    def forward(self, input: Tensor) -> Tensor:
        recorded = input.requires_grad and torch.is_grad_enabled()
        return F.silu(input, inplace=self.inplace and not recorded)


ACTIVATIONS = ("mish", "silu", "leaky", "relu", "none")


def make_activation(name: str) -> nn.Module:
    """An activation module by name: ``mish`` | ``silu`` | ``leaky`` (slope 0.1, Darknet's) |
    ``relu`` | ``none``."""
    if name == "mish":
        return Mish()
    if name == "silu":
        return SiLU(inplace=True)
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
    """YOLOv5's fast SPP: ``num_pools`` chained ``k x k`` max-pools, ``[x, p1, ..., p_n]``.

    With the default three 5x5 pools it equals 5/9/13 pools (``[x, p1, p2, p3]``).

    Shapes: ``(B, C, H, W) -> (B, (num_pools + 1) C, H, W)``.
    """

    def __init__(self, kernel_size: int = 5, num_pools: int = 3) -> None:
        super().__init__()
        if num_pools < 1:
            raise ValueError(f"SPPF needs num_pools >= 1, got {num_pools}")
        self.num_pools = num_pools
        self.pool = nn.MaxPool2d(kernel_size, stride=1, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        maps = [x]
        for _ in range(self.num_pools):
            maps.append(self.pool(maps[-1]))
        return torch.cat(maps, dim=1)


class SPPFBlock(nn.Module):
    """1x1 conv to ``in / 2``, :class:`SPPF`, 1x1 conv to ``out`` (YOLOv5/v8/11's ``SPPF`` layer).

    Equal to YOLOX's ``SPPBottleneck`` with 5/9/13 pools: same convs and the same concat order
    ``[x, pool5, pool9, pool13]`` (three chained 5x5 pools are the 5, 9 and 13 pools).

    YOLO26's variant (Ultralytics 8.4's ``SPPF(c, c, 5, 3, True)``): ``cv1_act=False`` (the first
    conv is conv + BatchNorm only) and ``shortcut=True`` (the input is added to the output when
    ``in == out``). ``num_pools`` chained pools (3 in every Ultralytics model).

    Shapes: ``(B, in, H, W) -> (B, out, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5, *,
                 act: str = "silu", num_pools: int = 3, shortcut: bool = False, cv1_act: bool = True) -> None:
        super().__init__()
        hidden = in_channels // 2
        self.cv1 = ConvBNAct(in_channels, hidden, 1, act=act if cv1_act else "none")
        self.pool = SPPF(kernel_size, num_pools)
        self.cv2 = ConvBNAct((num_pools + 1) * hidden, out_channels, 1, act=act)
        self.add = shortcut and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        y = self.cv2(self.pool(self.cv1(x)))
        return x + y if self.add else y


class Focus(nn.Module):
    """YOLOX's stem: space-to-depth (each 2x2 patch to 4x the channels), then a ConvBNAct.

    The patches are concatenated ``[top-left, bottom-left, top-right, bottom-right]``
    (YOLOX's order); same parameter count as YOLOv5's 6x6 stride-2 stem conv.

    Shapes: ``(B, in, H, W) -> (B, out, H / 2, W / 2)`` (H and W even).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *,
                 act: str = "silu") -> None:
        super().__init__()
        self.conv = ConvBNAct(4 * in_channels, out_channels, kernel_size, act=act)

    def forward(self, x: Tensor) -> Tensor:
        # (B, C, H, W) -> (B, 4C, H/2, W/2)
        patches = (x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2])
        return self.conv(torch.cat(patches, 1))


class DarknetBottleneck(nn.Module):
    """``conv2(conv1(x))``, plus ``x`` when ``shortcut`` and ``in == out``.

    Args:
        in_channels / out_channels / hidden_channels: widths (``hidden`` defaults to ``out``).
        kernel_sizes: of ``conv1`` and ``conv2``: ``(1, 3)`` is Darknet's residual block and the
            bottleneck of YOLOv5's C3 / YOLOX's CSPLayer; ``(3, 3)`` is YOLOv8's (C2f).
        shortcut: add the input (YOLOv8's and YOLOX's necks use blocks without it).
        act: activation; depthwise: depthwise-separable convs for kernels > 1.

    Shapes: ``(B, in, H, W) -> (B, out, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int | None = None,
                 *, kernel_sizes: tuple[int, int] = (1, 3), shortcut: bool = True,
                 act: str = "silu", depthwise: bool = False) -> None:
        super().__init__()
        hidden = out_channels if hidden_channels is None else hidden_channels
        k1, k2 = kernel_sizes
        self.conv1 = conv_unit(in_channels, hidden, k1, act=act, depthwise=depthwise)
        self.conv2 = conv_unit(hidden, out_channels, k2, act=act, depthwise=depthwise)
        self.add = shortcut and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv2(self.conv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP block with three convs: YOLOv5's C3, YOLOX's CSPLayer.

    ``cv3(cat[blocks(cv1(x)), cv2(x)])``: ``cv1`` / ``cv2`` are 1x1 convs to
    ``hidden = int(out * expansion)``, ``blocks`` are ``num_blocks`` :class:`DarknetBottleneck` s of
    width ``hidden`` with ``kernel_sizes`` ((1, 3); YOLO11's C3k: (3, 3)), ``cv3`` is a 1x1 conv to
    ``out``.

    Shapes: ``(B, in, H, W) -> (B, out, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int = 1, *,
                 shortcut: bool = True, expansion: float = 0.5, act: str = "silu",
                 depthwise: bool = False, kernel_sizes: tuple[int, int] = (1, 3)) -> None:
        super().__init__()
        hidden = int(out_channels * expansion)
        self.cv1 = ConvBNAct(in_channels, hidden, 1, act=act)
        self.cv2 = ConvBNAct(in_channels, hidden, 1, act=act)
        self.blocks = nn.Sequential(*(
            DarknetBottleneck(hidden, hidden, kernel_sizes=kernel_sizes, shortcut=shortcut, act=act,
                              depthwise=depthwise)
            for _ in range(num_blocks)
        ))
        self.cv3 = ConvBNAct(2 * hidden, out_channels, 1, act=act)

    def forward(self, x: Tensor) -> Tensor:
        return self.cv3(torch.cat([self.blocks(self.cv1(x)), self.cv2(x)], dim=1))


class C3k(C3):
    """YOLO11's C3k: a :class:`C3` whose bottlenecks are two ``k x k`` convs (Ultralytics' default
    two bottlenecks of width ``int(out * expansion)``, ``k = 3``).

    Shapes: ``(B, in, H, W) -> (B, out, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int = 2, *,
                 shortcut: bool = True, expansion: float = 0.5, act: str = "silu",
                 kernel_size: int = 3) -> None:
        super().__init__(in_channels, out_channels, num_blocks, shortcut=shortcut, expansion=expansion,
                         act=act, kernel_sizes=(kernel_size, kernel_size))


class C2f(nn.Module):
    """YOLOv8's CSP block: one 1x1 conv split in two halves, a chain of bottlenecks on the
    second half keeping every intermediate output, and a 1x1 conv over all of them.

    ``[a, b] = split(cv1(x))``, ``y_0 = b``, ``y_k = blocks[k-1](y_{k-1})``,
    ``out = cv2(cat[a, b, y_1, ..., y_n])``, with ``hidden = int(out * expansion)`` channels
    per part and (3, 3)-kernel :class:`DarknetBottleneck` s.

    Shapes: ``(B, in, H, W) -> (B, out, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int = 1, *,
                 shortcut: bool = False, expansion: float = 0.5, act: str = "silu",
                 depthwise: bool = False) -> None:
        super().__init__()
        self.hidden = int(out_channels * expansion)
        self.cv1 = ConvBNAct(in_channels, 2 * self.hidden, 1, act=act)
        self.cv2 = ConvBNAct((2 + num_blocks) * self.hidden, out_channels, 1, act=act)
        self.blocks = nn.ModuleList(
            DarknetBottleneck(self.hidden, self.hidden, kernel_sizes=(3, 3), shortcut=shortcut,
                              act=act, depthwise=depthwise)
            for _ in range(num_blocks)
        )

    def forward(self, x: Tensor) -> Tensor:
        parts = list(self.cv1(x).split(self.hidden, dim=1))  # (B, 2h, H, W) -> 2 x (B, h, H, W)
        for block in self.blocks:
            parts.append(block(parts[-1]))
        return self.cv2(torch.cat(parts, dim=1))  # (B, (2 + n) h, H, W) -> (B, out, H, W)


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
        assert self.conv_offset.bias is not None  # bias=True above
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(x, self.conv_offset(x))


def freeze(modules: Iterable[nn.Module]) -> None:
    """Put ``modules`` in eval mode and stop their gradients (frozen backbone stages)."""
    for module in modules:
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)


def set_batchnorm(module: nn.Module, eps: float, momentum: float) -> None:
    """Set ``eps`` and ``momentum`` of every BatchNorm below ``module``.

    YOLOv5/v8 and YOLOX train with ``eps=1e-3, momentum=0.03`` (PyTorch's convention: the weight
    of the new batch); PyTorch's defaults are ``1e-5, 0.1``. Eval outputs depend on ``eps``.
    """
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eps, m.momentum = eps, momentum


def norm_to_eval(module: nn.Module) -> None:
    """Every BatchNorm below ``module`` in eval mode, keeping its (pretrained) statistics."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
